//! The fault-injection checker's long mode: runs seeds until a count or a
//! duration is reached, prints a report for every failure, and exits
//! non-zero if any seed failed.
//!
//! ```text
//! cargo run -p ff-tests --bin ff-checker -- --world valkey --seeds 100
//! cargo run -p ff-tests --bin ff-checker -- --world postgres --hours 2
//! cargo run -p ff-tests --bin ff-checker -- --world valkey-cluster --seeds 20
//! cargo run -p ff-tests --bin ff-checker -- --world memory --seed 17   # replay one seed
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ff_tests::checker::world::WorldKind;
use ff_tests::checker::{run, RunConfig};

struct Args {
    worlds: Vec<WorldKind>,
    first: u64,
    seeds: Option<u64>,
    hours: Option<f64>,
    steps: usize,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: ff-checker [--world memory|valkey|postgres|valkey-cluster|all] [--seed N | --first N --seeds COUNT | --hours H] [--steps N]"
    );
    ExitCode::from(2)
}

fn parse() -> Option<Args> {
    let mut args = Args {
        worlds: WorldKind::ALL.to_vec(),
        first: 1,
        seeds: Some(10),
        hours: None,
        steps: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--world" if value == "all" => {}
            "--world" => args.worlds = vec![WorldKind::parse(&value)?],
            "--seed" => {
                args.first = value.parse().ok()?;
                args.seeds = Some(1);
            }
            "--first" => args.first = value.parse().ok()?,
            "--seeds" => args.seeds = Some(value.parse().ok()?),
            "--hours" => {
                args.hours = Some(value.parse().ok()?);
                args.seeds = None;
            }
            "--steps" => args.steps = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(args)
}

fn main() -> ExitCode {
    let Some(args) = parse() else {
        return usage();
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let until = args
        .hours
        .map(|h| Instant::now() + Duration::from_secs_f64(h * 3600.0));
    let mut failed = Vec::new();
    let mut ran = 0u64;
    let (mut published, mut delivered, mut faults) = (0, 0, 0);
    let mut seed = args.first;
    loop {
        if args.seeds.is_some_and(|n| seed >= args.first + n)
            || until.is_some_and(|u| Instant::now() >= u)
        {
            break;
        }
        for &world in &args.worlds {
            let config = RunConfig {
                seed,
                world,
                steps: args.steps,
            };
            let began = Instant::now();
            match runtime.block_on(run(&config)) {
                Ok(s) => {
                    published += s.published;
                    delivered += s.delivered;
                    faults += s.faults;
                    eprintln!(
                        "ok   {} seed {seed}: {} published, {} delivered, {} faults, {:.1?}",
                        world.as_str(),
                        s.published,
                        s.delivered,
                        s.faults,
                        s.elapsed
                    );
                }
                Err(f) => {
                    eprintln!("{}", f.report);
                    eprintln!(
                        "FAILED {} seed {seed} after {:.1?}",
                        world.as_str(),
                        began.elapsed()
                    );
                    failed.push((world, seed));
                }
            }
            ran += 1;
        }
        seed += 1;
    }
    eprintln!(
        "{ran} run(s): {} passed, {} failed; {published} events published, {delivered} delivered and checked, {faults} faults",
        ran - failed.len() as u64,
        failed.len()
    );
    for (world, seed) in &failed {
        eprintln!("failed: --world {} --seed {seed}", world.as_str());
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
