//! Bridges wired together in memory, exchanging BPDUs in 10 ms steps.

use super::*;

const STEP: Duration = Duration::from_millis(10);

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// One end of a cable: a bridge (by index) and its port.
type End = (usize, PortId);

struct Net {
    bridges: Vec<Stp>,
    /// (bridge, port) pairs joined by a cable that is up.
    links: Vec<(End, End, bool)>,
    now: Instant,
    /// Frames each bridge sent, per port.
    sent: Vec<Vec<(PortId, Bpdu)>>,
    events: Vec<Vec<StpEvent>>,
}

impl Net {
    fn new(configs: &[(StpMode, u16)]) -> Net {
        let now = Instant::from_secs(100);
        let bridges = configs
            .iter()
            .enumerate()
            .map(|(i, &(mode, priority))| {
                Stp::new(StpConfig {
                    priority,
                    hello: Duration::from_secs(1),
                    forward_delay: Duration::from_secs(4),
                    max_age: Duration::from_secs(6),
                    ..StpConfig::new(mode, mac(i as u8 + 1))
                })
            })
            .collect();
        Net {
            bridges,
            links: Vec::new(),
            now,
            sent: vec![Vec::new(); configs.len()],
            events: vec![Vec::new(); configs.len()],
        }
    }

    fn link(&mut self, a: (usize, u16), b: (usize, u16)) {
        let (a, b) = ((a.0, PortId(a.1)), (b.0, PortId(b.1)));
        for (bridge, port) in [a, b] {
            self.bridges[bridge].add_port(port, StpPortConfig::default(), true, self.now);
        }
        self.links.push((a, b, true));
    }

    fn cut(&mut self, index: usize) {
        let (a, b, _) = self.links[index];
        self.links[index].2 = false;
        self.bridges[a.0].set_link(a.1, false, self.now);
        self.bridges[b.0].set_link(b.1, false, self.now);
    }

    fn peer(&self, bridge: usize, port: PortId) -> Option<(usize, PortId)> {
        self.links.iter().filter(|l| l.2).find_map(|&(a, b, _)| {
            if a == (bridge, port) {
                Some(b)
            } else if b == (bridge, port) {
                Some(a)
            } else {
                None
            }
        })
    }

    fn step(&mut self) {
        self.now = self.now + STEP;
        let mut frames = Vec::new();
        for (i, bridge) in self.bridges.iter_mut().enumerate() {
            if bridge.next_deadline().is_some_and(|d| d <= self.now) {
                bridge.tick(self.now);
            }
            let mut out = Vec::new();
            bridge.transmit(self.now, mac(i as u8 + 1), &mut out);
            for (port, frame) in out {
                self.sent[i].push((port, Bpdu::parse(&frame).unwrap()));
                frames.push((i, port, frame));
            }
        }
        for (i, port, frame) in frames {
            if let Some((b, p)) = self.peer(i, port) {
                // A legacy (802.1D-1998) bridge such as Linux's ignores RST BPDUs.
                let legacy = self.bridges[b].config().mode == StpMode::Stp;
                if legacy && Bpdu::parse(&frame).is_ok_and(|b| b.kind == BpduKind::Rst) {
                    continue;
                }
                let _ = self.bridges[b].receive(p, &frame, self.now);
            }
        }
        for (i, bridge) in self.bridges.iter_mut().enumerate() {
            self.events[i].extend(bridge.take_events());
        }
    }

    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done`, returning how long it took; panics after `limit`.
    fn until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(self.now.saturating_duration_since(start) < limit, "not done within {limit:?}");
            self.step();
        }
        self.now.saturating_duration_since(start)
    }

    fn port(&self, bridge: usize, port: u16) -> &StpPort {
        self.bridges[bridge].port(PortId(port)).unwrap()
    }

    fn converged(&self) -> bool {
        let root = self.bridges.iter().map(Stp::bridge_id).min().unwrap();
        self.bridges.iter().all(|b| {
            b.root_id() == root
                && b.ports().all(|p| match p.role() {
                    Role::Root | Role::Designated => p.state() == PortState::Forwarding,
                    Role::Disabled => !p.link_up,
                    _ => p.state() == PortState::Discarding,
                })
        })
    }
}

/// Bridge 0 (priority 4096), 1 (8192), 2 (32768) in a triangle: 0-1 on ports 1/1, 0-2 on 2/1,
/// 1-2 on 2/2.
fn triangle(modes: [StpMode; 3]) -> Net {
    let mut net = Net::new(&[(modes[0], 4096), (modes[1], 8192), (modes[2], 32768)]);
    net.link((0, 1), (1, 1));
    net.link((0, 2), (2, 1));
    net.link((1, 2), (2, 2));
    net
}

#[test]
fn rstp_triangle_converges_by_proposal_and_agreement_in_well_under_a_second() {
    let mut net = triangle([StpMode::Rstp; 3]);
    let took = net.until(Duration::from_secs(1), Net::converged);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(net.bridges[2].root_id(), net.bridges[0].bridge_id());
    assert_eq!(net.bridges[1].root_port(), Some(PortId(1)));
    assert_eq!(net.bridges[2].root_port(), Some(PortId(1)));
    assert_eq!(net.port(2, 2).role(), Role::Alternate);
    assert_eq!(net.port(1, 2).role(), Role::Designated);
    assert_eq!(net.port(0, 1).role(), Role::Designated);
    assert_eq!(net.bridges[2].root_path_cost(), DEFAULT_PORT_COST);
    // It stays so with BPDUs flowing.
    net.run(Duration::from_secs(10));
    assert!(net.converged());
    assert_eq!(net.port(2, 2).state(), PortState::Discarding);
    assert!(net.port(0, 1).bpdus_tx >= 10);
}

#[test]
fn cutting_the_root_port_makes_the_alternate_forward_at_once() {
    let mut net = triangle([StpMode::Rstp; 3]);
    net.until(Duration::from_secs(1), Net::converged);
    net.events[2].clear();
    net.cut(1); // 0-2: bridge 2's root port
    // The alternate takes over in the same step.
    assert_eq!(net.bridges[2].root_port(), Some(PortId(2)));
    assert_eq!(net.port(2, 2).state(), PortState::Forwarding);
    assert!(net.bridges[2].take_events().contains(&StpEvent::State { port: PortId(2), state: PortState::Forwarding }));
    let took = net.until(Duration::from_secs(1), Net::converged);
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert_eq!(net.bridges[2].root_path_cost(), 2 * DEFAULT_PORT_COST);
    // The topology change reached bridge 1, which forgot what it learned on its other ports.
    net.run(Duration::from_millis(100));
    assert!(net.events[1].contains(&StpEvent::Flush { port: PortId(1) }), "{:?}", net.events[1]);
}

#[test]
fn cutting_a_link_to_the_root_reroots_through_the_other_bridge() {
    let mut net = triangle([StpMode::Rstp; 3]);
    net.until(Duration::from_secs(1), Net::converged);
    net.cut(0); // 0-1: bridge 1's root port; bridge 1 must go through bridge 2
    let took = net.until(Duration::from_secs(1), Net::converged);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(net.bridges[1].root_port(), Some(PortId(2)));
    assert_eq!(net.port(2, 2).role(), Role::Designated);
}

#[test]
fn legacy_stp_neighbour_gets_configuration_bpdus_and_timer_transitions() {
    // Bridge 2 is an 802.1D bridge (like the kernel's); 0 and 1 run RSTP.
    let mut net = triangle([StpMode::Rstp, StpMode::Rstp, StpMode::Stp]);
    net.run(Duration::from_secs(5));
    // Past the migration delay the RSTP ports toward it speak 802.1D.
    assert!(!net.port(0, 2).sends_rstp());
    assert!(!net.port(1, 2).sends_rstp());
    assert!(net.port(0, 1).sends_rstp());
    let last = net.sent[0].iter().rev().find(|(p, _)| *p == PortId(2)).unwrap().1;
    assert_eq!(last.kind, BpduKind::Config);
    // Toward the legacy bridge nothing forwards early: twice the forward delay (4 s).
    let took = net.until(Duration::from_secs(20), Net::converged);
    assert!(net.now.saturating_duration_since(Instant::from_secs(100)) >= Duration::from_secs(8), "{took:?}");
    assert_eq!(net.bridges[2].root_id(), net.bridges[0].bridge_id());
    assert_eq!(net.port(2, 2).role(), Role::Alternate);
    assert_eq!(net.port(2, 2).state(), PortState::Discarding);
}

#[test]
fn legacy_tcn_is_acknowledged_and_flushes() {
    let mut net = triangle([StpMode::Rstp, StpMode::Rstp, StpMode::Stp]);
    net.until(Duration::from_secs(30), Net::converged);
    net.events[0].clear();
    let tcn = Bpdu {
        kind: BpduKind::Tcn,
        flags: 0,
        root_id: 0,
        root_path_cost: 0,
        bridge_id: 0,
        port_id: 0,
        message_age: 0,
        max_age: 0,
        hello_time: 0,
        forward_delay: 0,
    }
    .emit(mac(3));
    assert_eq!(net.bridges[0].receive(PortId(2), &tcn, net.now), Ok(()));
    let mut out = Vec::new();
    net.bridges[0].transmit(net.now, mac(1), &mut out);
    let ack = out.iter().map(|(p, f)| (*p, Bpdu::parse(f).unwrap())).find(|(p, _)| *p == PortId(2)).unwrap().1;
    assert_eq!(ack.kind, BpduKind::Config);
    assert_ne!(ack.flags & flags::TC_ACK, 0);
    assert_ne!(ack.flags & flags::TC, 0);
    let events = net.bridges[0].take_events();
    assert!(events.contains(&StpEvent::Flush { port: PortId(1) }), "{events:?}");
    assert!(!events.contains(&StpEvent::Flush { port: PortId(2) }), "{events:?}");
}

#[test]
fn edge_port_forwards_at_once_until_a_bpdu_arrives() {
    let now = Instant::from_secs(1);
    let mut stp = Stp::new(StpConfig::new(StpMode::Rstp, mac(1)));
    stp.add_port(PortId(0), StpPortConfig { edge: true, ..StpPortConfig::default() }, true, now);
    assert_eq!(stp.port(PortId(0)).unwrap().state(), PortState::Forwarding);
    assert_eq!(stp.take_events(), vec![StpEvent::State { port: PortId(0), state: PortState::Forwarding }]);
    stp.add_port(PortId(1), StpPortConfig::default(), true, now);
    assert_eq!(stp.port(PortId(1)).unwrap().state(), PortState::Discarding);
    // A superior BPDU on the edge port: it is a bridge port after all, and the root port.
    let other = Stp::new(StpConfig { priority: 0, ..StpConfig::new(StpMode::Rstp, mac(9)) });
    let bpdu = Stp::config_bpdu(
        BpduKind::Rst,
        0,
        Stp::own_vector(other.config()),
        other.bridge_id(),
        0x8001,
        Stp::own_times(other.config()),
        true,
    )
    .with_role(BpduRole::Designated)
    .emit(mac(9));
    stp.receive(PortId(0), &bpdu, now).unwrap();
    let port = stp.port(PortId(0)).unwrap();
    assert!(!port.oper_edge());
    assert_eq!(port.role(), Role::Root);
    assert_eq!(stp.root_id(), other.bridge_id());
}

#[test]
fn bpdu_guard_disables_the_port_until_its_link_bounces() {
    let now = Instant::from_secs(1);
    let mut stp = Stp::new(StpConfig::new(StpMode::Rstp, mac(1)));
    let guarded = StpPortConfig { edge: true, bpdu_guard: true, ..StpPortConfig::default() };
    stp.add_port(PortId(3), guarded, true, now);
    stp.take_events();
    let mut out = Vec::new();
    stp.transmit(now, mac(1), &mut out);
    let (_, frame) = out[0];
    assert_eq!(stp.receive(PortId(3), &frame, now), Err(DropReason::BpduGuard));
    let events = stp.take_events();
    assert!(events.contains(&StpEvent::GuardTripped { port: PortId(3) }));
    assert!(events.contains(&StpEvent::State { port: PortId(3), state: PortState::Discarding }));
    let port = stp.port(PortId(3)).unwrap();
    assert!(port.guard_tripped());
    assert_eq!(port.role(), Role::Disabled);
    // Another one is counted, not reported again.
    assert_eq!(stp.receive(PortId(3), &frame, now), Err(DropReason::BpduGuard));
    assert_eq!(stp.guard_trips, 2);
    assert!(stp.take_events().is_empty());
    stp.set_link(PortId(3), false, now);
    stp.set_link(PortId(3), true, now);
    assert_eq!(stp.port(PortId(3)).unwrap().state(), PortState::Forwarding);
}

#[test]
fn malformed_bpdus_are_counted_not_taken() {
    let now = Instant::from_secs(1);
    let mut stp = Stp::new(StpConfig::new(StpMode::Rstp, mac(1)));
    stp.add_port(PortId(0), StpPortConfig::default(), true, now);
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&crate::wire::bpdu::BRIDGE_GROUP_MAC.0);
    frame[6..12].copy_from_slice(&mac(2).0);
    assert_eq!(stp.receive(PortId(0), &frame, now), Err(DropReason::BadBpdu));
    assert_eq!(stp.receive(PortId(0), &frame[..10], now), Err(DropReason::BadBpdu));
    assert_eq!(stp.receive(PortId(7), &frame, now), Err(DropReason::BadBpdu));
    assert_eq!(stp.port(PortId(0)).unwrap().role(), Role::Designated);
}

#[test]
fn root_information_ages_out_without_bpdus() {
    let mut net = Net::new(&[(StpMode::Rstp, 4096), (StpMode::Rstp, 32768)]);
    net.link((0, 0), (1, 0));
    net.until(Duration::from_secs(1), Net::converged);
    assert_eq!(net.bridges[1].root_id(), net.bridges[0].bridge_id());
    // The cable goes silent without a link change (a one-way failure).
    net.links[0].2 = false;
    net.run(Duration::from_millis(2900));
    assert_eq!(net.bridges[1].root_id(), net.bridges[0].bridge_id());
    net.run(Duration::from_millis(200));
    assert_eq!(net.bridges[1].root_id(), net.bridges[1].bridge_id());
    assert_eq!(net.port(1, 0).role(), Role::Designated);
}

#[test]
fn two_ports_on_one_lan_make_one_a_backup() {
    let mut net = Net::new(&[(StpMode::Rstp, 32768)]);
    net.link((0, 0), (0, 1));
    net.run(Duration::from_secs(1));
    assert_eq!(net.port(0, 0).role(), Role::Designated);
    assert_eq!(net.port(0, 1).role(), Role::Backup);
    assert_eq!(net.port(0, 1).state(), PortState::Discarding);
}

#[test]
fn removed_port_leaves_the_tree() {
    let mut net = triangle([StpMode::Rstp; 3]);
    net.until(Duration::from_secs(1), Net::converged);
    let now = net.now;
    net.bridges[2].remove_port(PortId(1), now);
    net.links.remove(1);
    assert_eq!(net.bridges[2].root_port(), Some(PortId(2)));
    assert!(net.bridges[2].port(PortId(1)).is_none());
    net.until(Duration::from_secs(1), Net::converged);
}

#[test]
fn bridge_ids_print_like_linux() {
    assert_eq!(format_bridge_id(StpConfig::new(StpMode::Rstp, mac(1)).bridge_id()), "8000.020000000001");
    let port = StpPortConfig { priority: 0x90, ..StpPortConfig::default() };
    let mut stp = Stp::new(StpConfig::new(StpMode::Stp, mac(1)));
    stp.add_port(PortId(4), port, true, Instant::ZERO);
    assert_eq!(stp.port(PortId(4)).unwrap().port_id(), 0x9005);
}

#[test]
fn toward_a_legacy_root_a_topology_change_goes_up_as_tcns_until_acknowledged() {
    let mut net = Net::new(&[(StpMode::Stp, 4096), (StpMode::Rstp, 32768)]);
    net.link((0, 1), (1, 1));
    // A second port with no bridge behind it: designated, forwarding after two forward delays,
    // which is a topology change.
    let now = net.now;
    net.bridges[1].add_port(PortId(2), StpPortConfig::default(), true, now);
    net.until(Duration::from_secs(20), |n| n.port(1, 2).state() == PortState::Forwarding);
    assert!(!net.port(1, 1).sends_rstp());
    net.run(Duration::from_secs(2));
    let tcns = |net: &Net| net.sent[1].iter().filter(|(p, b)| *p == PortId(1) && b.kind == BpduKind::Tcn).count();
    let sent = tcns(&net);
    assert!(sent >= 1, "no TCN toward the legacy root");
    // The root acknowledged: the TCNs stopped (another hello may have gone before the ack).
    assert!(sent <= 2, "{sent} TCNs");
    net.run(Duration::from_secs(5));
    assert_eq!(tcns(&net), sent, "TCNs kept coming after the acknowledgment");
    let acked = net.sent[0].iter().any(|(_, b)| b.kind == BpduKind::Config && b.flags & flags::TC_ACK != 0);
    assert!(acked);
    assert!(net.port(1, 1).tc_until.is_none());
}
