//! Percentiles of a sample, for the report.

use serde::Serialize;

/// Nearest-rank percentiles (the value at rank ceil(p/100 * n)), so every reported number is
/// one that was actually measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Sorts `values` in place. An empty sample gives all zeros (and count 0).
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |p: f64| values[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            count: n,
            mean: values.iter().sum::<f64>() / n as f64,
            min: values[0],
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: values[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of(&mut v);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.min),
            (50.0, 95.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(s.mean, 50.5);
        assert_eq!(s.count, 100);
        let mut one = [7.0];
        let s = Summary::of(&mut one);
        assert_eq!((s.p50, s.p99), (7.0, 7.0));
        assert_eq!(Summary::of(&mut []).count, 0);
    }
}
