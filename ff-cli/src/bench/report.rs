//! The benchmark report: each figure measured through ff beside the same
//! figure from a raw-client baseline in the same run.

use serde::Serialize;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Stable name (`catch_up_events_per_sec`, ...).
    pub name: String,
    /// Unit (`events/s`, `us`, `MiB`, ...).
    pub unit: String,
    /// Measured through ff.
    pub ff: f64,
    /// Measured with the raw client, when a baseline applies.
    pub raw: Option<f64>,
    /// `ff / raw`, when there is a baseline.
    pub ratio: Option<f64>,
}

impl Figure {
    /// A figure with its raw baseline.
    pub fn new(name: &str, unit: &str, ff: f64, raw: Option<f64>) -> Self {
        let ratio = raw.filter(|r| *r != 0.0).map(|r| ff / r);
        Self {
            name: name.into(),
            unit: unit.into(),
            ff,
            raw,
            ratio,
        }
    }
}

/// A whole benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Which backend (URL with credentials removed).
    pub backend: String,
    /// Partitions per family (Valkey).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u16>,
    /// Nodes serving data: a cluster's primaries, or 1 (Valkey).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    /// The figures, in the order measured.
    pub figures: Vec<Figure>,
}

impl BenchReport {
    /// Print as an aligned table.
    pub fn print_table(&self) {
        match (self.partitions, self.nodes) {
            (Some(p), Some(n)) => println!(
                "ff bench — {} ({p} partition{}, {n} node{})",
                self.backend,
                if p == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" }
            ),
            _ => println!("ff bench — {}", self.backend),
        }
        println!(
            "{:<32} {:>14} {:>14} {:>8}  unit",
            "figure", "ff", "raw", "ratio"
        );
        for f in &self.figures {
            let raw = f.raw.map_or("-".to_owned(), |r| format!("{r:.1}"));
            let ratio = f.ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"));
            println!(
                "{:<32} {:>14.1} {:>14} {:>8}  {}",
                f.name, f.ff, raw, ratio, f.unit
            );
        }
    }
}
