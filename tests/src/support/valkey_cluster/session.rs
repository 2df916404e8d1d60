//! A blocking RESP connection to one node that several commands share —
//! what `ASKING` followed by the asked command needs.
//!
//! Invariant: every read and write is bounded by the connection's timeout,
//! so a stopped node fails the caller instead of hanging the test.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::super::valkey::read_reply;
use super::super::SupportError;
use crate::support::Reply;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a node on the loopback interface.
pub struct Session {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl Session {
    /// Connects to `127.0.0.1:port` with a 10 s timeout per operation.
    pub fn connect(port: u16) -> Result<Self, SupportError> {
        Self::connect_with_timeout(port, DEFAULT_TIMEOUT)
    }

    /// Connects with `timeout` for the connect and for each read and write.
    pub fn connect_with_timeout(port: u16, timeout: Duration) -> Result<Self, SupportError> {
        let io_err = |e| SupportError::io(format!("connecting to valkey on port {port}"), e);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(Session {
            port,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply (a `-ERR` reply is
    /// [`Reply::Error`], not an `Err`).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, SupportError> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        let port = self.port;
        self.reader
            .get_mut()
            .write_all(&request)
            .map_err(|e| SupportError::io(format!("writing to valkey on port {port}"), e))?;
        read_reply(&mut self.reader, 0)
    }

    /// [`command`](Self::command) with text arguments.
    pub fn text_command(&mut self, args: &[&str]) -> Result<Reply, SupportError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command(&args)
    }
}
