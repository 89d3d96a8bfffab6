//! The verdict: which side of the WAN lost the traffic, as one word and one plain sentence.
//! Pure: it reads the counts the matcher made and says what they mean.

use super::core::{ExchangeCounts, LossWindow, C2O, CPE, O2C, OVOC};
use super::dissect::{Class, Exchange};
use std::collections::BTreeMap;

/// Unanswered requests in a row, at the end, that make a side "silent".
const SILENT_REQUESTS: u64 = 3;
/// A side that sent nothing for this long (ns) at the end, while the other kept sending, went
/// silent; also at least [`SILENT_GAPS`] times its usual interval (the median gap between the
/// seconds it sent in: a poller's period, not dragged down by its bursts).
const SILENT_GAP: i64 = 10_000_000_000;
const SILENT_GAPS: i64 = 10;
/// Lost packets of a direction that make WAN loss: one alone is too little to outweigh
/// anything (a capture's hiccup, a packet sent as the link went down).
const MIN_LOSS: u64 = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub verdict: &'static str,
    pub text: String,
}

/// What the verdict is made from. Times are OVOC time unless named otherwise.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Why nothing can be said, when that is so (no common packet, no overlap...).
    pub inconclusive: Option<String>,
    /// Per direction: sent, seen, lost (inside the other capture's window).
    pub sent: [u64; 2],
    pub seen: [u64; 2],
    pub lost: [u64; 2],
    /// Every loss window, sorted by start.
    pub losses: Vec<LossWindow>,
    /// Per side, per (request direction, kind).
    pub exchanges: [BTreeMap<(usize, Exchange), ExchangeCounts>; 2],
    /// Per direction: (first, last, count) OVOC time of packets sent inside the common window.
    pub sent_span: [Option<(i64, i64, u64)>; 2],
    /// Per direction: packets sent after the other direction's last one.
    pub sent_after_other_stopped: [u64; 2],
    /// The end of the common window.
    pub common_end: Option<i64>,
    /// Per direction: the last sent packet that the far side saw.
    pub last_seen: [Option<i64>; 2],
    /// CPE clock minus OVOC clock over the common window, ns: turns OVOC times into the CPE's.
    pub offset_ns: i64,
    /// Per direction: received packets that no sent packet matched.
    pub unexpected: [u64; 2],
    /// Per direction: packets the receiver's capture says it dropped itself (pcapng statistics).
    pub receiver_drops: [u64; 2],
    /// Per direction: the median gap between the timeline's seconds with sent packets, ns.
    pub usual_gap: [Option<i64>; 2],
}

impl Facts {
    fn cpe_time(&self, t: i64) -> String {
        clock_time(t.saturating_add(self.offset_ns))
    }

    fn ovoc_time(&self, t: i64) -> String {
        clock_time(t)
    }
}

fn classes(losses: &[&LossWindow]) -> String {
    let mut c: Vec<Class> = losses.iter().map(|w| w.class).collect();
    c.sort();
    c.dedup();
    let words: Vec<String> = c.into_iter().map(Class::words).collect();
    match words.as_slice() {
        [] => "traffic".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

pub fn decide(f: &Facts) -> Verdict {
    if let Some(why) = &f.inconclusive {
        return inconclusive(why);
    }
    if let Some(why) = capture_drops(f) {
        return inconclusive(&why);
    }
    loss(f)
        .or_else(|| silence(f))
        .or_else(|| single_loss(f))
        .unwrap_or_else(|| {
            if f.sent[O2C] + f.sent[C2O] == 0 {
                return inconclusive(
                    "neither side sent anything to the other while both captures ran",
                );
            }
            Verdict {
                verdict: "no_loss",
                text: format!(
                    "Every packet sent while both captures ran reached the other side: {} from \
                     OVOC to the CPE, {} from the CPE to OVOC.",
                    f.sent[O2C], f.sent[C2O]
                ),
            }
        })
}

fn inconclusive(why: &str) -> Verdict {
    Verdict {
        verdict: "inconclusive",
        text: format!("Inconclusive: {why}."),
    }
}

/// Losses that the receiving capture's own drops could explain: its statistics say it missed
/// at least as many packets as were lost towards it.
fn capture_drops(f: &Facts) -> Option<String> {
    [O2C, C2O].into_iter().find_map(|dir| {
        let (lost, drops) = (f.lost[dir], f.receiver_drops[dir]);
        (lost > 0 && drops >= lost).then(|| {
            let (to, from) = if dir == O2C {
                ("the CPE", "OVOC")
            } else {
                ("OVOC", "the CPE")
            };
            format!(
                "{lost} packets from {from} were not seen by {to}, but {to}'s capture itself \
                 dropped {drops} packets (its statistics): the network may have carried them"
            )
        })
    })
}

/// One packet lost, nothing else to say: too little to call it WAN loss.
fn single_loss(f: &Facts) -> Option<Verdict> {
    let dir = [O2C, C2O].into_iter().find(|d| f.lost[*d] > 0)?;
    let w = f.losses.iter().find(|w| w.dir == dir);
    let (what, clock, at) = if dir == O2C {
        (
            "from OVOC to the CPE",
            "CPE",
            w.map(|w| f.cpe_time(w.start_t)),
        )
    } else {
        (
            "from the CPE to OVOC",
            "OVOC",
            w.map(|w| f.ovoc_time(w.start_t)),
        )
    };
    let when = at.map_or(String::new(), |t| format!(" at {t} ({clock} clock)"));
    Some(inconclusive(&format!(
        "one packet {what} was lost{when}, everything else arrived: too little to call it \
         WAN loss"
    )))
}

/// Losses decide first: which direction, since when, and whether anything got through after.
fn loss(f: &Facts) -> Option<Verdict> {
    let down: Vec<&LossWindow> = f.losses.iter().filter(|w| w.dir == O2C).collect();
    let up: Vec<&LossWindow> = f.losses.iter().filter(|w| w.dir == C2O).collect();
    let first = |ws: &[&LossWindow]| ws.iter().map(|w| w.start_t).min();
    match (f.lost[O2C] >= MIN_LOSS, f.lost[C2O] >= MIN_LOSS) {
        (true, true) => {
            let from = match (first(&down), first(&up)) {
                (Some(a), Some(b)) => format!("From {} (CPE clock) ", f.cpe_time(a.min(b))),
                _ => String::new(),
            };
            let text = format!(
                "{from}traffic was lost in both directions: {} of {} packets from OVOC ({}) and \
                 {} of {} from the CPE ({}) never arrived.",
                f.lost[O2C],
                f.sent[O2C],
                classes(&down),
                f.lost[C2O],
                f.sent[C2O],
                classes(&up)
            );
            let mut text = text;
            if let Some(c) = text.get(..1).filter(|_| from.is_empty()) {
                text = c.to_uppercase() + &text[1..];
            }
            Some(Verdict {
                verdict: "wan_loss_both",
                text,
            })
        }
        (true, false) => Some(one_way(f, O2C, &down)),
        (false, true) => Some(one_way(f, C2O, &up)),
        (false, false) => None,
    }
}

/// Loss in one direction, told in the receiver's clock for OVOC-to-CPE (when the CPE stopped
/// hearing) and in OVOC's for CPE-to-OVOC.
fn one_way(f: &Facts, dir: usize, ws: &[&LossWindow]) -> Verdict {
    let (verdict, from, to, clock) = if dir == O2C {
        ("wan_loss_ovoc_to_cpe", "OVOC", "the CPE", "CPE")
    } else {
        ("wan_loss_cpe_to_ovoc", "the CPE", "OVOC", "OVOC")
    };
    let time = |t: i64| {
        if dir == O2C {
            f.cpe_time(t)
        } else {
            f.ovoc_time(t)
        }
    };
    // Loss until the end: nothing of that direction got through once the loss began. Every
    // direction with losses has a window (the matcher keeps each one's first).
    let Some(start) = ws.iter().map(|w| w.start_t).min() else {
        return Verdict {
            verdict,
            text: format!(
                "{} of {} packets from {from} did not reach {to}; {}.",
                f.lost[dir],
                f.sent[dir],
                other_way(f, 1 - dir)
            ),
        };
    };
    let never = f.last_seen[dir].is_none_or(|seen| seen < start);
    let what = if never {
        format!("{} from {from} never reached {to}", classes(ws))
    } else {
        let last = ws.iter().map(|w| w.end_t).max().unwrap_or(start);
        format!(
            "{} of {} packets from {from} ({}) did not reach {to}, the last at {}",
            f.lost[dir],
            f.sent[dir],
            classes(ws),
            time(last)
        )
    };
    Verdict {
        verdict,
        text: format!(
            "From {} ({clock} clock) {what}; {}.",
            time(start),
            other_way(f, 1 - dir)
        ),
    }
}

/// Without loss: a side that stopped answering or sending.
fn silence(f: &Facts) -> Option<Verdict> {
    // Request times below are the capture's own: the CPE's clock for the CPE's capture.
    if let Some((since, n, kind)) = silent(&f.exchanges[CPE], O2C) {
        return Some(Verdict {
            verdict: "cpe_silent",
            text: format!(
                "From {} (CPE clock) {n} {kind} requests from OVOC reached the CPE and got no \
                 answer; the network carried every packet in both directions.",
                clock_time(since)
            ),
        });
    }
    if let Some(since) = stopped(f, O2C) {
        return Some(Verdict {
            verdict: "ovoc_silent",
            text: format!(
                "From {} (OVOC clock) OVOC sent nothing to the CPE, while {} packets from the \
                 CPE still reached OVOC; nothing was lost in transit.",
                f.ovoc_time(since),
                f.sent_after_other_stopped[C2O]
            ),
        });
    }
    if let Some((since, n, kind)) = silent(&f.exchanges[OVOC], C2O) {
        return Some(Verdict {
            verdict: "ovoc_silent",
            text: format!(
                "From {} (OVOC clock) {n} {kind} requests from the CPE reached OVOC and got no \
                 answer; the network carried every packet in both directions.",
                clock_time(since)
            ),
        });
    }
    None
}

fn other_way(f: &Facts, dir: usize) -> String {
    match (dir == C2O, f.sent[dir] == 0) {
        (true, true) => "the CPE sent nothing to OVOC".into(),
        (true, false) => "CPE to OVOC traffic was unaffected".into(),
        (false, true) => "OVOC sent nothing to the CPE".into(),
        (false, false) => "OVOC to CPE traffic was unaffected".into(),
    }
}

/// The trailing run of unanswered requests in `dir` as one capture saw them, if long enough:
/// (since, count, kind).
fn silent(
    x: &BTreeMap<(usize, Exchange), ExchangeCounts>,
    dir: usize,
) -> Option<(i64, u64, &'static str)> {
    x.iter()
        .filter(|((d, _), c)| *d == dir && c.trailing_unanswered >= SILENT_REQUESTS)
        .filter_map(|((_, k), c)| Some((c.trailing_since?, c.trailing_unanswered, words(*k))))
        .min_by_key(|v| v.0)
}

fn words(k: Exchange) -> &'static str {
    match k {
        Exchange::Snmp => "SNMP",
        Exchange::IcmpEcho => "ICMP echo",
        Exchange::TcpHandshake => "TCP connection",
    }
}

/// When `dir`'s sender stopped for good while the other direction went on.
fn stopped(f: &Facts, dir: usize) -> Option<i64> {
    let (_, last, _) = f.sent_span[dir]?;
    let end = f.common_end?;
    let usual = f.usual_gap[dir].unwrap_or(0);
    let gap = end - last;
    (gap > SILENT_GAP
        && gap > SILENT_GAPS.saturating_mul(usual)
        && f.sent_after_other_stopped[1 - dir] >= 3)
        .then_some(last)
}

/// `14:03:22.104` (UTC).
pub fn clock_time(t: i64) -> String {
    crate::timefmt::Utc::from_unix_micros(t.div_euclid(1000)).time_of_day_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::core::LossWindow;

    const S: i64 = 1_000_000_000;

    fn facts() -> Facts {
        Facts {
            sent: [100, 100],
            seen: [100, 100],
            sent_span: [Some((0, 100 * S, 100)), Some((0, 100 * S, 100))],
            common_end: Some(101 * S),
            last_seen: [Some(100 * S), Some(100 * S)],
            offset_ns: 3600 * S,
            ..Facts::default()
        }
    }

    fn loss(dir: usize, class: Class, start: i64, end: i64, n: u64) -> LossWindow {
        LossWindow {
            dir,
            class,
            start_native: start * S,
            end_native: end * S,
            start_t: start * S,
            end_t: end * S,
            packets: n,
        }
    }

    #[test]
    fn verdicts() {
        let mut cases: Vec<(Facts, &str, &str)> = Vec::new();
        cases.push((facts(), "no_loss", "Every packet sent"));
        let mut f = facts();
        f.lost[O2C] = 40;
        f.losses = vec![loss(O2C, Class::Snmp, 60, 100, 40)];
        f.last_seen[O2C] = Some(59 * S);
        cases.push((
            f,
            "wan_loss_ovoc_to_cpe",
            "From 01:01:00.000 (CPE clock) SNMP from OVOC never reached the CPE; CPE to OVOC \
             traffic was unaffected.",
        ));
        let mut f = facts();
        f.lost[C2O] = 3;
        f.losses = vec![
            loss(C2O, Class::Syslog, 10, 11, 2),
            loss(C2O, Class::Tcp(443), 20, 20, 1),
        ];
        cases.push((
            f,
            "wan_loss_cpe_to_ovoc",
            "From 00:00:10.000 (OVOC clock) 3 of 100 packets from the CPE (TCP 443 and syslog) \
             did not reach OVOC, the last at 00:00:20.000; OVOC to CPE traffic was unaffected.",
        ));
        let mut f = facts();
        f.lost = [2, 3];
        f.losses = vec![
            loss(O2C, Class::Icmp, 5, 6, 2),
            loss(C2O, Class::Icmp, 7, 9, 3),
        ];
        cases.push((f, "wan_loss_both", "in both directions"));
        check(cases);
    }

    fn check(cases: Vec<(Facts, &str, &str)>) {
        for (f, verdict, text) in cases {
            let v = decide(&f);
            assert_eq!(v.verdict, verdict, "{v:?}");
            assert!(v.text.contains(text), "{}\nwanted: {text}", v.text);
        }
    }

    /// Verdicts other than plain loss: silence, too little loss, what the captures missed.
    #[test]
    fn silence_single_losses_and_capture_drops() {
        let mut cases: Vec<(Facts, &str, &str)> = Vec::new();
        // One packet lost in each direction: too little for WAN loss.
        let mut f = facts();
        f.lost = [1, 1];
        f.losses = vec![
            loss(O2C, Class::Icmp, 5, 5, 1),
            loss(C2O, Class::Icmp, 7, 7, 1),
        ];
        cases.push((
            f,
            "inconclusive",
            "one packet from OVOC to the CPE was lost at 01:00:05.000 (CPE clock)",
        ));
        // One packet lost does not outweigh a device that stopped answering.
        let mut f = facts();
        f.lost[O2C] = 1;
        f.losses = vec![loss(O2C, Class::Snmp, 70, 70, 1)];
        f.exchanges[CPE].insert(
            (O2C, Exchange::Snmp),
            ExchangeCounts {
                requests: 50,
                answered: 30,
                trailing_unanswered: 20,
                trailing_since: Some(50 * S),
            },
        );
        cases.push((f, "cpe_silent", "20 SNMP requests"));
        // The receiving capture dropped as many packets as were lost.
        let mut f = facts();
        f.lost[O2C] = 4;
        f.receiver_drops[O2C] = 9;
        f.losses = vec![loss(O2C, Class::Snmp, 60, 63, 4)];
        cases.push((f, "inconclusive", "capture itself dropped 9 packets"));
        let mut f = facts();
        f.lost[O2C] = 4;
        f.receiver_drops[C2O] = 9;
        f.losses = vec![loss(O2C, Class::Snmp, 60, 63, 4)];
        cases.push((f, "wan_loss_ovoc_to_cpe", "4 of 100 packets"));
        // Losses counted in a direction without a window of its own (windows of the other
        // direction only): told without a time, never a panic.
        let mut f = facts();
        f.lost = [0, 5];
        f.losses = vec![loss(O2C, Class::Snmp, 60, 63, 4)];
        cases.push((f, "wan_loss_cpe_to_ovoc", "5 of 100 packets from the CPE"));
        let mut f = facts();
        f.lost = [5, 5];
        f.losses = vec![loss(O2C, Class::Snmp, 60, 63, 4)];
        cases.push((f, "wan_loss_both", "Traffic was lost in both directions"));
        let mut f = facts();
        f.exchanges[CPE].insert(
            (O2C, Exchange::Snmp),
            ExchangeCounts {
                requests: 50,
                answered: 30,
                trailing_unanswered: 20,
                trailing_since: Some(50 * S),
            },
        );
        cases.push((
            f,
            "cpe_silent",
            "From 00:00:50.000 (CPE clock) 20 SNMP requests",
        ));
        let mut f = facts();
        f.sent_span[O2C] = Some((0, 40 * S, 40));
        f.sent_after_other_stopped[C2O] = 60;
        cases.push((
            f,
            "ovoc_silent",
            "From 00:00:40.000 (OVOC clock) OVOC sent nothing",
        ));
        let mut f = facts();
        f.inconclusive = Some("no packet in common".into());
        cases.push((f, "inconclusive", "Inconclusive: no packet in common."));
        let mut f = facts();
        f.sent = [0, 0];
        cases.push((f, "inconclusive", "neither side sent"));
        for (f, verdict, text) in cases {
            let v = decide(&f);
            assert_eq!(v.verdict, verdict, "{v:?}");
            assert!(v.text.contains(text), "{}\nwanted: {text}", v.text);
        }
    }

    /// OVOC polls in bursts once a minute (many packets, a small mean gap): the quiet minute
    /// after its last burst is its usual interval, not silence; ten of them are.
    #[test]
    fn silence_is_measured_in_usual_intervals() {
        let cases = [
            // (last burst, common end, usual gap s, verdict)
            (600, 659, Some(60), "no_loss"),
            (600, 1300, Some(60), "ovoc_silent"),
            (600, 615, Some(1), "ovoc_silent"),
            (600, 605, Some(1), "no_loss"),
        ];
        for (last, end, gap, want) in cases {
            let mut f = facts();
            // 11 bursts of 50 packets: a mean gap of about 12 s.
            f.sent_span[O2C] = Some((0, last * S, 550));
            f.usual_gap[O2C] = gap.map(|g| g * S);
            f.common_end = Some(end * S);
            f.sent_after_other_stopped[C2O] = 40;
            assert_eq!(decide(&f).verdict, want, "{last} {end} {gap:?}");
        }
    }

    #[test]
    fn a_short_pause_is_not_silence() {
        let mut f = facts();
        // 5 s without packets at a 1 s rate: below the 10 s floor.
        f.sent_span[O2C] = Some((0, 96 * S, 96));
        f.sent_after_other_stopped[C2O] = 5;
        assert_eq!(decide(&f).verdict, "no_loss");
    }
}
