//! Severity: the level a record gives, from its CVSS vectors scored here (v4.0, else
//! v3.x, else v2), else from the words databases add.

use std::fmt;
use std::str::FromStr;

use super::record::{OsvSeverity, Specific};

/// A severity level. Ordered: `Unknown < Low < Medium < High < Critical`.
///
/// From a CVSS vector, the level is the qualitative rating of the base score computed
/// from the vector ([`cvss_base_score`]): v4 and v3 0.1-3.9 Low, 4.0-6.9 Medium,
/// 7.0-8.9 High, 9.0-10.0 Critical; v2 (NVD's ratings) 0.0-3.9 Low, 4.0-6.9 Medium,
/// 7.0-10.0 High. There is no "None" level: a score of 0.0, which advisories do not
/// publish in practice, reads as Low.
///
/// Words ([`FromStr`], case-insensitive): `critical`; `high`, `important`; `medium`,
/// `moderate`; `low`, `negligible`, `unimportant`; and `unknown`, `unspecified`,
/// `not yet assigned` or nothing for Unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The CVSS v3 qualitative rating of a base score (0.0 reads as Low).
    pub fn from_cvss3_score(score: f64) -> Severity {
        match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    /// The CVSS v4.0 qualitative rating of a base score: v3's scale (0.0 reads as Low).
    pub fn from_cvss4_score(score: f64) -> Severity {
        Severity::from_cvss3_score(score)
    }

    /// NVD's rating of a CVSS v2 base score.
    pub fn from_cvss2_score(score: f64) -> Severity {
        match score {
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity word that is none of [`Severity`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?}")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(text: &str) -> Result<Self, UnknownSeverity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" | "important" => Ok(Severity::High),
            "medium" | "moderate" => Ok(Severity::Medium),
            "low" | "negligible" | "unimportant" => Ok(Severity::Low),
            "" | "unknown" | "unspecified" | "not yet assigned" => Ok(Severity::Unknown),
            _ => Err(UnknownSeverity(text.to_owned())),
        }
    }
}

/// A CVSS vector that could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CVSS vector {vector:?}: {reason}")]
pub struct CvssError {
    pub vector: String,
    pub reason: String,
}

/// The base score of a CVSS v4.0 (`CVSS:4.0/AV:N/...`), v3.0/v3.1 (`CVSS:3.1/AV:N/...`)
/// or v2 (`AV:N/AC:L/Au:N/...`, in parentheses or not) vector, computed by the `cvss`
/// crate (FIRST's formulas; for v4, FIRST's macrovector tables). Every base metric
/// must be present. Only base metrics count: v3 and v2 temporal and environmental
/// metrics are ignored, and so are v4's threat, environmental and supplemental metrics
/// (the score is CVSS-B: an `E:U` written by the advisory would only lower it, so
/// leaving it out never hides a finding from `--fail-on`).
pub fn cvss_base_score(vector: &str) -> Result<f64, CvssError> {
    let vector = vector.trim();
    let invalid = |reason: String| CvssError {
        vector: vector.to_owned(),
        reason,
    };
    let text = vector.trim_start_matches('(').trim_end_matches(')');
    match text.parse::<cvss::Cvss>() {
        Ok(cvss::Cvss::CvssV20(v2)) => Ok(v2.score().value()),
        Ok(cvss::Cvss::CvssV30(v3) | cvss::Cvss::CvssV31(v3)) => {
            // The crate scores a missing v3 metric as 0 instead of refusing it.
            let base = [
                v3.av.is_some(),
                v3.ac.is_some(),
                v3.pr.is_some(),
                v3.ui.is_some(),
                v3.s.is_some(),
                v3.c.is_some(),
                v3.i.is_some(),
                v3.a.is_some(),
            ];
            if base.contains(&false) {
                return Err(invalid("a base metric is missing".to_owned()));
            }
            Ok(v3.base_score().value())
        }
        // Parsed whole first, so that a bad threat or environmental metric is refused
        // too; then scored on the base metrics alone.
        Ok(cvss::Cvss::CvssV40(_)) => cvss4_base(text).map_err(|e| invalid(e.to_string())),
        Ok(_) => Err(invalid("unsupported CVSS version".to_owned())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// The CVSS-B score of a v4.0 vector: its base metrics only.
pub(super) fn cvss4_base(vector: &str) -> Result<f64, cvss::Error> {
    pub(super) const BASE: [&str; 11] = [
        "AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA",
    ];
    let mut base = String::with_capacity(vector.len());
    for (i, piece) in vector.split('/').enumerate() {
        let key = piece.split_once(':').map_or(piece, |(key, _)| key);
        if i == 0 || BASE.iter().any(|b| b.eq_ignore_ascii_case(key)) {
            if i > 0 {
                base.push('/');
            }
            base.push_str(piece);
        }
    }
    Ok(base.parse::<cvss::v4::Vector>()?.score().value())
}

/// The level from `severity[]`: the highest CVSS v4 score, else the highest v3, else
/// v2, else an Ubuntu priority.
///
/// The newest CVSS version the advisory publishes wins, as NVD chooses its primary
/// score: it is the publisher's latest assessment, under the standard FIRST maintains.
/// A vector that cannot be scored counts as absent, so an older version still speaks.
pub(super) fn from_vectors(list: &[OsvSeverity]) -> Option<(Severity, Option<f64>)> {
    let best = |kind: &str| {
        list.iter()
            .filter(|s| s.kind.eq_ignore_ascii_case(kind))
            .filter_map(|s| cvss_base_score(&s.score).ok())
            .max_by(f64::total_cmp)
    };
    if let Some(score) = best("CVSS_V4") {
        return Some((Severity::from_cvss4_score(score), Some(score)));
    }
    if let Some(score) = best("CVSS_V3") {
        return Some((Severity::from_cvss3_score(score), Some(score)));
    }
    if let Some(score) = best("CVSS_V2") {
        return Some((Severity::from_cvss2_score(score), Some(score)));
    }
    list.iter()
        .filter(|s| s.kind.eq_ignore_ascii_case("Ubuntu"))
        .filter_map(|s| s.score.parse::<Severity>().ok())
        .filter(|s| *s != Severity::Unknown)
        .max()
        .map(|severity| (severity, None))
}

/// `{"severity": "HIGH"}` in a `database_specific` or `ecosystem_specific` object.
pub(super) fn severity_word(specific: &Specific) -> Option<Severity> {
    specific
        .severity
        .as_deref()?
        .parse::<Severity>()
        .ok()
        .filter(|s| *s != Severity::Unknown)
}
