//! Small statistics helpers: percentiles over samples and rounding for reports.

use serde_json::{Value, json};

/// Latency samples in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile (`p` in 0..=100); NaN when empty.
    pub fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }

    /// `{n, p50_ms, p99_ms, max_ms}` with values rounded to 0.01 ms.
    pub fn summary(&self) -> Value {
        json!({ "n": self.len(), "p50_ms": r2(self.pct(50.0)), "p99_ms": r2(self.pct(99.0)), "max_ms": r2(self.max()) })
    }
}

/// Rounds to two decimals (NaN becomes JSON null through `json!`).
pub fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
