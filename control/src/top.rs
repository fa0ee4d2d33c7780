//! `vswitchctl top`: per-port rates (frames/s, bits/s, drops/s by reason) and FDB activity
//! computed from two snapshots of `port show` and `show` taken some time apart, and the screen
//! that shows them. Pure: the caller polls, sleeps and prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::ctl::{BridgeSummary, PortShowResult};

/// One port's rates over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRates {
    /// The port.
    pub name: String,
    /// Frames received per second.
    pub rx_fps: f64,
    /// Frames sent per second.
    pub tx_fps: f64,
    /// Bits received per second.
    pub rx_bps: f64,
    /// Bits sent per second.
    pub tx_bps: f64,
    /// Drops per second, by reason (reasons with drops in the interval only).
    pub drops_ps: BTreeMap<String, f64>,
}

impl PortRates {
    /// Drops per second, all reasons.
    pub fn drops_total_ps(&self) -> f64 {
        self.drops_ps.values().fold(0.0, |sum, n| sum + n) // (`sum()` of nothing is -0.0)
    }
}

/// FDB activity over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct FdbRates {
    /// Entries at the end of the interval.
    pub entries: usize,
    /// Learns per second.
    pub learns_ps: f64,
    /// Moves per second.
    pub moves_ps: f64,
    /// Entries aged out per second.
    pub expired_ps: f64,
    /// Evictions per second.
    pub evictions_ps: f64,
}

fn per_second(before: u64, after: u64, secs: f64) -> f64 {
    // A counter that went back (the port was removed and added again) counts from zero.
    let delta = if after >= before { after - before } else { after };
    if secs > 0.0 { delta as f64 / secs } else { 0.0 }
}

/// Each port's rates between `before` and `after`, taken `elapsed` apart, in `after`'s order.
/// A port absent from `before` (added in between) counts from zero.
pub fn port_rates(before: &PortShowResult, after: &PortShowResult, elapsed: Duration) -> Vec<PortRates> {
    let secs = elapsed.as_secs_f64();
    after
        .ports
        .iter()
        .map(|a| {
            let b = before.ports.iter().find(|b| b.name == a.name);
            let old = |get: fn(&crate::ctl::PortStats) -> u64| b.map_or(0, get);
            PortRates {
                name: a.name.clone(),
                rx_fps: per_second(old(|p| p.rx_frames), a.rx_frames, secs),
                tx_fps: per_second(old(|p| p.tx_frames), a.tx_frames, secs),
                rx_bps: 8.0 * per_second(old(|p| p.rx_bytes), a.rx_bytes, secs),
                tx_bps: 8.0 * per_second(old(|p| p.tx_bytes), a.tx_bytes, secs),
                drops_ps: a
                    .drops
                    .iter()
                    .map(|(reason, n)| {
                        let was = b.and_then(|b| b.drops.get(reason)).copied().unwrap_or(0);
                        (reason.clone(), per_second(was, *n, secs))
                    })
                    .filter(|(_, rate)| *rate > 0.0)
                    .collect(),
            }
        })
        .collect()
}

/// The FDB's activity between `before` and `after`, taken `elapsed` apart.
pub fn fdb_rates(before: &BridgeSummary, after: &BridgeSummary, elapsed: Duration) -> FdbRates {
    let secs = elapsed.as_secs_f64();
    FdbRates {
        entries: after.fdb_entries,
        learns_ps: per_second(before.fdb_learned, after.fdb_learned, secs),
        moves_ps: per_second(before.fdb_moved, after.fdb_moved, secs),
        expired_ps: per_second(before.fdb_expired, after.fdb_expired, secs),
        evictions_ps: per_second(before.fdb_evicted, after.fdb_evicted, secs),
    }
}

/// A rate with an SI prefix: `950`, `12.5k`, `1.20M`, `3.40G`.
pub fn si(value: f64) -> String {
    let (scaled, prefix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        return format!("{value:.1}");
    };
    if scaled >= 100.0 { format!("{scaled:.0}{prefix}") } else { format!("{scaled:.2}{prefix}") }
}

/// The screen (or, not on a terminal, the block of lines) for one interval.
pub fn render(bridge: &str, elapsed: Duration, ports: &[PortRates], fdb: &FdbRates, terminal: bool) -> String {
    let mut out = String::new();
    if terminal {
        out.push_str("\x1b[H\x1b[2J"); // home, clear screen
    }
    let _ = writeln!(
        out,
        "bridge {bridge}  interval {:.1}s  fdb {} entries  learns {}/s  moves {}/s  expired {}/s  evictions {}/s",
        elapsed.as_secs_f64(),
        fdb.entries,
        si(fdb.learns_ps),
        si(fdb.moves_ps),
        si(fdb.expired_ps),
        si(fdb.evictions_ps)
    );
    let header = ["PORT", "RX-FRAMES/S", "TX-FRAMES/S", "RX-BITS/S", "TX-BITS/S", "DROPS/S", "DROPS-BY-REASON/S"];
    let rows: Vec<[String; 7]> = ports
        .iter()
        .map(|p| {
            let reasons: Vec<String> = p.drops_ps.iter().map(|(r, n)| format!("{r}={}", si(*n))).collect();
            [
                p.name.clone(),
                si(p.rx_fps),
                si(p.tx_fps),
                si(p.rx_bps),
                si(p.tx_bps),
                si(p.drops_total_ps()),
                if reasons.is_empty() { "-".into() } else { reasons.join(",") },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6]]);
    }
    if !terminal {
        out.push('\n'); // a blank line between intervals
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::PortStats;

    fn stats(name: &str, rx: (u64, u64), tx: (u64, u64), drops: &[(&str, u64)]) -> PortStats {
        PortStats {
            name: name.into(),
            rx_frames: rx.0,
            rx_bytes: rx.1,
            tx_frames: tx.0,
            tx_bytes: tx.1,
            rx_errors: 0,
            drops: drops.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
            worker_rx_frames: vec![rx.0],
        }
    }

    #[test]
    fn rates_are_deltas_over_elapsed_time() {
        let before =
            PortShowResult { ports: vec![stats("p1", (100, 10_000), (50, 5_000), &[("runt", 1), ("no_room", 4)])] };
        let after = PortShowResult {
            ports: vec![
                stats("p1", (300, 30_000), (60, 6_000), &[("runt", 5), ("no_room", 4)]),
                stats("p2", (10, 1_000), (0, 0), &[("runt", 0)]),
            ],
        };
        let rates = port_rates(&before, &after, Duration::from_secs(2));
        assert_eq!(rates.len(), 2);
        let p1 = &rates[0];
        assert_eq!((p1.rx_fps, p1.tx_fps), (100.0, 5.0));
        assert_eq!((p1.rx_bps, p1.tx_bps), (80_000.0, 4_000.0));
        assert_eq!(p1.drops_ps, BTreeMap::from([("runt".to_string(), 2.0)]));
        assert_eq!(p1.drops_total_ps(), 2.0);
        // A port that appeared in between counts from zero.
        let p2 = &rates[1];
        assert_eq!((p2.name.as_str(), p2.rx_fps, p2.rx_bps), ("p2", 5.0, 4_000.0));
        assert!(p2.drops_ps.is_empty());
    }

    #[test]
    fn a_counter_that_went_back_counts_from_zero_and_no_time_means_no_rate() {
        let before = PortShowResult { ports: vec![stats("p1", (1_000, 100_000), (0, 0), &[])] };
        let after = PortShowResult { ports: vec![stats("p1", (10, 1_000), (0, 0), &[])] };
        let rates = port_rates(&before, &after, Duration::from_secs(1));
        assert_eq!(rates[0].rx_fps, 10.0);
        let rates = port_rates(&before, &after, Duration::ZERO);
        assert_eq!(rates[0].rx_fps, 0.0);
    }

    #[test]
    fn fdb_activity_per_second() {
        let mut before: BridgeSummary = serde_json::from_value(serde_json::json!({
            "name": "br0", "fdb_aging_secs": 300, "fdb_max_entries": 100, "fdb_entries": 2,
            "fdb_learned_entries": 2, "fdb_learned": 10, "fdb_moved": 1, "fdb_expired": 0, "fdb_evicted": 0
        }))
        .unwrap();
        let mut after = before.clone();
        after.fdb_entries = 7;
        after.fdb_learned = 20;
        after.fdb_moved = 2;
        after.fdb_evicted = 4;
        let rates = fdb_rates(&before, &after, Duration::from_millis(500));
        assert_eq!(rates, FdbRates { entries: 7, learns_ps: 20.0, moves_ps: 2.0, expired_ps: 0.0, evictions_ps: 8.0 });
        before.fdb_learned = 30; // went back: counts from zero
        assert_eq!(fdb_rates(&before, &after, Duration::from_secs(1)).learns_ps, 20.0);
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0.0");
        assert_eq!(si(999.0), "999.0");
        assert_eq!(si(12_500.0), "12.50k");
        assert_eq!(si(1_200_000.0), "1.20M");
        assert_eq!(si(340_000_000.0), "340M");
        assert_eq!(si(3_400_000_000.0), "3.40G");
    }

    #[test]
    fn screen_is_a_table_and_clears_only_on_a_terminal() {
        let ports = vec![PortRates {
            name: "p1".into(),
            rx_fps: 100.0,
            tx_fps: 5.0,
            rx_bps: 80_000.0,
            tx_bps: 4_000.0,
            drops_ps: BTreeMap::from([("runt".to_string(), 2.0)]),
        }];
        let fdb = FdbRates { entries: 3, learns_ps: 1.0, moves_ps: 0.0, expired_ps: 0.0, evictions_ps: 0.0 };
        let plain = render("br0", Duration::from_secs(1), &ports, &fdb, false);
        assert!(!plain.contains('\x1b'));
        let lines: Vec<&str> = plain.lines().collect();
        assert!(lines[0].starts_with("bridge br0  interval 1.0s  fdb 3 entries  learns 1.0/s"), "{plain}");
        assert!(lines[1].starts_with("PORT"), "{plain}");
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, ["p1", "100.0", "5.0", "80.00k", "4.00k", "2.0", "runt=2.0"]);
        let idle = PortRates { name: "p2".into(), drops_ps: BTreeMap::new(), ..ports[0].clone() };
        let plain = render("br0", Duration::from_secs(1), &[idle], &fdb, false);
        let cells: Vec<&str> = plain.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(cells[5..], ["0.0", "-"], "{plain}");
        let screen = render("br0", Duration::from_secs(1), &ports, &fdb, true);
        assert!(screen.starts_with("\x1b[H\x1b[2J"));
    }
}
