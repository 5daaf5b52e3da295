//! Port-scan detection from connection attempts (SYNs): a source that tries many
//! distinct ports, or many distinct hosts, within a short window is scanning. One
//! finding per burst: after reporting, a source is quiet for one window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortScanSettings {
    pub window: Duration,
    /// Distinct destination ports (on any hosts) that make a scan.
    pub ports: usize,
    /// Distinct destination hosts that make a scan.
    pub hosts: usize,
}

impl Default for PortScanSettings {
    fn default() -> Self {
        PortScanSettings {
            window: Duration::from_secs(5),
            ports: 25,
            hosts: 25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanFinding {
    pub ports: usize,
    pub hosts: usize,
    pub window: Duration,
}

#[derive(Default)]
struct Source {
    /// (time ns, host, port), oldest first, within the window.
    attempts: VecDeque<(i128, IpAddr, u16)>,
    quiet_until: i128,
}

pub struct PortScanDetector {
    settings: PortScanSettings,
    sources: HashMap<IpAddr, Source>,
    /// Attempts kept per source at most (a flood must not grow memory without bound).
    cap: usize,
    last_sweep: i128,
    /// Scratch for counting distinct ports and hosts: reused, so a SYN costs no
    /// allocation.
    ports: Vec<u16>,
    hosts: Vec<IpAddr>,
}

impl PortScanDetector {
    pub fn new(settings: PortScanSettings) -> PortScanDetector {
        PortScanDetector {
            cap: settings.ports.max(settings.hosts).saturating_mul(4).max(64),
            settings,
            sources: HashMap::new(),
            last_sweep: 0,
            ports: Vec::new(),
            hosts: Vec::new(),
        }
    }

    /// Records one attempt at `ts` (ns); a finding when it completes a scan.
    pub fn observe(
        &mut self,
        ts: i128,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
    ) -> Option<ScanFinding> {
        let window = self.settings.window.as_nanos() as i128;
        if ts - self.last_sweep > window * 4 {
            self.sources.retain(|_, s| {
                s.attempts.back().is_some_and(|a| ts - a.0 <= window) || s.quiet_until > ts
            });
            self.last_sweep = ts;
        }
        let s = self.sources.entry(src).or_default();
        while s.attempts.front().is_some_and(|a| ts - a.0 > window) {
            s.attempts.pop_front();
        }
        if s.attempts.len() >= self.cap {
            s.attempts.pop_front();
        }
        s.attempts.push_back((ts, dst, port));
        if ts < s.quiet_until {
            return None;
        }
        let (ports, hosts) = (&mut self.ports, &mut self.hosts);
        ports.clear();
        ports.extend(s.attempts.iter().map(|a| a.2));
        ports.sort_unstable();
        ports.dedup();
        hosts.clear();
        hosts.extend(s.attempts.iter().map(|a| a.1));
        hosts.sort_unstable();
        hosts.dedup();
        if ports.len() >= self.settings.ports || hosts.len() >= self.settings.hosts {
            s.quiet_until = ts + window;
            s.attempts.clear();
            return Some(ScanFinding {
                ports: ports.len(),
                hosts: hosts.len(),
                window: self.settings.window,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i128 = 1_000_000;

    #[test]
    fn many_ports_in_a_window_is_a_scan_reported_once_few_or_slow_is_not() {
        let mut d = PortScanDetector::new(PortScanSettings::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        // The same port again and again: a client retrying, not a scan.
        for i in 0..100 {
            assert_eq!(d.observe(i * MS, a, b, 443), None);
        }
        // 50 ports, one per 10 ms: found at the 25th, once.
        let mut found = Vec::new();
        for p in 0..50u16 {
            if let Some(f) = d.observe((1000 + i128::from(p) * 10) * MS, a, b, 1000 + p) {
                found.push((p, f));
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].0, 23,
            "the 25th distinct port (443 is in the window too)"
        );
        // Slow: one port every second never fills a 5 s window.
        let slow: IpAddr = "10.0.0.9".parse().unwrap();
        for p in 0..60u16 {
            assert_eq!(
                d.observe((100_000 + i128::from(p) * 1000) * MS, slow, b, 2000 + p),
                None
            );
        }
        // Many hosts, one port: a sweep.
        let sweeper: IpAddr = "10.0.0.10".parse().unwrap();
        let hit = (0..30u8).find_map(|h| {
            d.observe(
                (200_000 + i128::from(h)) * MS,
                sweeper,
                IpAddr::from([10, 1, 0, h]),
                22,
            )
        });
        assert_eq!(hit.map(|f| f.hosts), Some(25));
    }
}
