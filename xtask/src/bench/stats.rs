//! Small-sample statistics for comparing runs without and with the tracer: means, sample
//! standard deviations, and Welch's t interval for the difference of two means (unequal
//! variances, Welch–Satterthwaite degrees of freedom), with the t quantile it needs computed
//! here since the crate takes no statistics dependency.

/// The two-sided 95 % level's normal quantile, z₀.₉₇₅.
const Z_975: f64 = 1.959_963_984_540_054;

/// The arithmetic mean; NaN for no values.
pub(super) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sample variance (divided by n − 1); NaN for fewer than two values.
pub(super) fn sample_variance(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let m = mean(values);
    values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64
}

/// The sample standard deviation (n − 1); NaN for fewer than two values.
pub(super) fn sample_sd(values: &[f64]) -> f64 {
    sample_variance(values).sqrt()
}

/// t₀.₉₇₅(df), the quantile of Student's t for a two-sided 95 % interval, for any real df ≥ 1
/// (Welch's df is not an integer).
///
/// For df ≥ 2: the Cornish–Fisher expansion of t around z = 1.959964 in powers of 1/df
/// (Abramowitz & Stegun 26.7.5), through the df⁻⁴ term: within 0.001 of the exact quantile
/// from df = 4 on, 0.004 at df = 3 and 0.032 at df = 2 (low there), and below 10⁻⁴ at the 20
/// runs a side the benchmark uses (df ≥ 19).
///
/// Below df = 2 the expansion diverges, so the quantile is interpolated linearly in 1/df
/// between the exact value at df = 1 (tan(0.475 π) = 12.706) and the expansion's at df = 2:
/// t is convex in 1/df, so this errs on the wide side. Welch's df is never below 1 when each
/// side has at least two runs; smaller values are treated as 1.
pub(super) fn t_975(df: f64) -> f64 {
    if df.is_nan() {
        return f64::NAN;
    }
    if df.is_infinite() {
        return Z_975;
    }
    if df < 2.0 {
        let t1 = (0.475 * std::f64::consts::PI).tan();
        let t2 = cornish_fisher_975(2.0);
        // 1/df runs from 1 (df = 1) down to 0.5 (df = 2).
        let x = 1.0 / df.max(1.0);
        return t2 + (x - 0.5) / 0.5 * (t1 - t2);
    }
    cornish_fisher_975(df)
}

/// A&S 26.7.5: t_p(ν) ≈ z + g₁(z)/ν + g₂(z)/ν² + g₃(z)/ν³ + g₄(z)/ν⁴ with z the normal quantile.
fn cornish_fisher_975(df: f64) -> f64 {
    let z = Z_975;
    let z2 = z * z;
    let z3 = z2 * z;
    let z5 = z3 * z2;
    let z7 = z5 * z2;
    let z9 = z7 * z2;
    let g1 = (z3 + z) / 4.0;
    let g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
    let g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
    let g4 = (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / 92160.0;
    z + g1 / df + g2 / df.powi(2) + g3 / df.powi(3) + g4 / df.powi(4)
}

/// Welch's two-sided 95 % interval for mean(with) − mean(without).
#[derive(Clone, Copy, Debug)]
pub(super) struct Welch {
    pub(super) mean_without: f64,
    pub(super) mean_with: f64,
    /// mean(with) − mean(without).
    pub(super) diff: f64,
    /// Its standard error, √(s²_with/n_with + s²_without/n_without).
    pub(super) se: f64,
    /// Welch–Satterthwaite degrees of freedom (infinite when both samples have no spread).
    pub(super) df: f64,
    /// t₀.₉₇₅(df).
    pub(super) t: f64,
    pub(super) low: f64,
    pub(super) high: f64,
}

impl Welch {
    /// Welch's interval for two samples; `None` unless each has at least two values (a sample
    /// variance needs two).
    pub(super) fn new(without: &[f64], with: &[f64]) -> Option<Self> {
        if without.len() < 2 || with.len() < 2 {
            return None;
        }
        let (n0, n1) = (without.len() as f64, with.len() as f64);
        let v0 = sample_variance(without) / n0;
        let v1 = sample_variance(with) / n1;
        let se2 = v0 + v1;
        let df = if se2 > 0.0 {
            se2 * se2 / (v0 * v0 / (n0 - 1.0) + v1 * v1 / (n1 - 1.0))
        } else {
            // Identical values on both sides: no spread, so the interval is the point itself.
            f64::INFINITY
        };
        let (mean_without, mean_with) = (mean(without), mean(with));
        let diff = mean_with - mean_without;
        let se = se2.sqrt();
        let t = t_975(df);
        Some(Self {
            mean_without,
            mean_with,
            diff,
            se,
            df,
            t,
            low: diff - t * se,
            high: diff + t * se,
        })
    }

    /// The difference and its interval as percentages of the mean without: (difference, low,
    /// high). The mean without is taken as exact here, which is close enough when its own
    /// spread is small next to the difference's.
    pub(super) fn relative_pct(&self) -> (f64, f64, f64) {
        let pct = |v: f64| v / self.mean_without * 100.0;
        (pct(self.diff), pct(self.low), pct(self.high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn means_and_deviations() {
        assert_eq!(mean(&[1.0, 2.0, 3.0, 6.0]), 3.0);
        assert!(mean(&[]).is_nan());
        // Deviations −2, 0, −1, 1, 2: squares sum to 10, over n − 1 = 4.
        assert_eq!(sample_variance(&[10.0, 12.0, 11.0, 13.0, 14.0]), 2.5);
        assert!(close(
            sample_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]),
            2.138,
            0.001
        ));
        assert!(sample_sd(&[1.0]).is_nan());
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95 % critical values of Student's t, from the usual tables.
        for (df, expected) in [
            (1.0, 12.706),
            (3.0, 3.182),
            (4.0, 2.776),
            (5.0, 2.571),
            (10.0, 2.228),
            (19.0, 2.093),
            (30.0, 2.042),
            (60.0, 2.000),
            (120.0, 1.980),
        ] {
            let t = t_975(df);
            assert!(
                close(t, expected, 0.01),
                "t(0.975, {df}) = {t}, not {expected}"
            );
        }
        assert!(close(t_975(2.0), 4.303, 0.04));
        assert!(close(t_975(5.0), 2.5706, 0.001));
        assert!(close(t_975(10.0), 2.2281, 0.0005));
        assert!(close(t_975(30.0), 2.0423, 0.0005));
        assert_eq!(t_975(f64::INFINITY), Z_975);
        // Non-integer df (exact values by numerical integration of the t density).
        assert!(close(t_975(2.5), 3.5747, 0.02));
        assert!(close(t_975(8.1967), 2.2964, 0.0005));
        // Below 2: conservative (never narrower than the exact 6.017 at df 1.5).
        let t = t_975(1.5);
        assert!((6.017..7.2).contains(&t), "t(0.975, 1.5) = {t}");
        // Continuous and decreasing in df throughout, across the switch at df = 2.
        assert!(close(t_975(1.999_999), t_975(2.0), 1e-4));
        let mut last = f64::INFINITY;
        for i in 10..=400 {
            let t = t_975(f64::from(i) / 10.0);
            assert!(t < last, "t rises at df {}", f64::from(i) / 10.0);
            last = t;
        }
    }

    #[test]
    fn welch_interval_by_hand() {
        // without: mean 12, s² 2.5 (n 5); with: mean 14, s² 2 (n 6).
        // se² = 2.5/5 + 2/6 = 0.8333, se = 0.91287;
        // df = 0.8333² / (0.5²/4 + 0.3333²/5) = 0.69444 / 0.084722 = 8.1967;
        // t(0.975, 8.1967) = 2.2964; interval 2 ± 2.0964 = (−0.0964, 4.0964).
        let without = [10.0, 12.0, 11.0, 13.0, 14.0];
        let with = [12.0, 15.0, 13.0, 14.0, 16.0, 14.0];
        let w = Welch::new(&without, &with).unwrap();
        assert_eq!(w.diff, 2.0);
        assert!(close(w.se, 0.91287, 1e-5));
        assert!(close(w.df, 8.1967, 1e-4));
        assert!(close(w.t, 2.2964, 5e-4));
        assert!(close(w.low, -0.0964, 1e-3));
        assert!(close(w.high, 4.0964, 1e-3));
        // Relative to the mean without (12): +16.67 % (−0.80 % to +34.14 %).
        let (pct, low, high) = w.relative_pct();
        assert!(close(pct, 16.667, 1e-3));
        assert!(close(low, -0.803, 1e-2));
        assert!(close(high, 34.137, 1e-2));
    }

    #[test]
    fn welch_edge_cases() {
        assert!(Welch::new(&[1.0], &[1.0, 2.0]).is_none());
        // No spread at all: the interval is the difference itself.
        let w = Welch::new(&[2.0, 2.0], &[3.0, 3.0, 3.0]).unwrap();
        assert!(w.df.is_infinite());
        assert_eq!((w.low, w.diff, w.high), (1.0, 1.0, 1.0));
        // Equal variances and sizes: df = 2n − 2, as for Student's pooled test.
        let w = Welch::new(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0]).unwrap();
        assert!(close(w.df, 4.0, 1e-9));
    }
}
