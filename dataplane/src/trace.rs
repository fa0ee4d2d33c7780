//! What `vswitchctl trace` reports: the decisions the real pipeline makes for one frame,
//! recorded by the forwarding code itself when it is handed a [`TraceLog`].
//!
//! The forwarding functions ([`crate::bridge::Bridge::ingress`], the switch's flood loop and
//! transmit path) take an `Option<&mut TraceLog>`: `None` on the forwarding path (a branch,
//! nothing recorded, nothing allocated), `Some` for a trace, where every step notes its
//! decision and the steps that would send, count or learn stop short of it. There is no
//! second description of the pipeline to drift from the first.

use std::net::SocketAddr;

use serde::Serialize;

use crate::fdb::LearnOutcome;
use crate::port_modes::FloodClass;
use crate::verdict::{DropReason, Forward};
use crate::vlan::Egress;
use crate::wire::MacAddr;
use crate::{PortId, VlanId};

/// The most events one trace keeps (a flood to many ports stops being recorded there).
pub const MAX_EVENTS: usize = 512;

/// What learning the frame's source would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learning {
    /// A new entry on the ingress port.
    WouldLearn,
    /// The entry is on the ingress port already: its age would be reset.
    Refresh,
    /// The entry would move from another port.
    WouldMove {
        /// Where it is now.
        from: PortId,
    },
    /// A static entry holds the address: nothing changes.
    Static,
    /// The move would be one too many: the address gets pinned to `held_on`.
    Pinned {
        /// The port it stays on.
        held_on: PortId,
    },
    /// The address is pinned to another port after flapping: refused.
    HeldDown {
        /// The port it is pinned to.
        held_on: PortId,
    },
    /// Learning is off (`fdb_max_entries = 0`) or the source cannot be learned.
    NotLearned,
}

impl Learning {
    /// What a [`LearnOutcome`] means for a frame that has not been forwarded.
    pub fn of(outcome: LearnOutcome) -> Learning {
        match outcome {
            LearnOutcome::Learned => Learning::WouldLearn,
            LearnOutcome::Refreshed { .. } => Learning::Refresh,
            LearnOutcome::Moved { from } => Learning::WouldMove { from },
            LearnOutcome::Static => Learning::Static,
            LearnOutcome::Pinned { held_on, .. } => Learning::Pinned { held_on },
            LearnOutcome::HeldDown { held_on } => Learning::HeldDown { held_on },
            LearnOutcome::InvalidSource | LearnOutcome::Disabled => Learning::NotLearned,
        }
    }
}

/// What happens to the frame at one egress port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAction {
    /// A flood passes the port by silently (the reason says why).
    Skipped(&'static str),
    /// Dropped there, counted under this reason.
    Dropped(DropReason),
    /// The port's VLAN action.
    Vlan(Egress),
    /// A bond's choice of member (`None`: every usable member, broadcast mode).
    BondMember(Option<String>),
    /// Into the VXLAN tunnel: the VNI and the remotes the datagram goes to (`learned`: the
    /// destination MAC was learned behind that remote; otherwise every flood remote).
    Vxlan {
        /// The VNI.
        vni: u32,
        /// The remote VTEPs.
        remotes: Vec<SocketAddr>,
        /// Whether the remote was learned for the destination.
        learned: bool,
    },
    /// An ARP request / neighbour solicitation answered locally (`arp_suppress`) with this MAC
    /// instead of going into the tunnel.
    Suppressed(MacAddr),
    /// Offload handling on the way out.
    Offload(&'static str),
    /// Would be sent: this many bytes, on this bond member if any.
    WouldSend {
        /// Bytes on the wire (without FCS).
        len: usize,
        /// The bond member.
        member: Option<String>,
    },
    /// Another worker owns the port: handed over to it.
    HandedOff,
}

/// One decision of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// The frame, as received on the port.
    Received {
        /// The ingress port.
        port: PortId,
        /// Its length.
        len: usize,
    },
    /// A BPDU the spanning tree takes: it goes no further.
    SpanningTree,
    /// Ingress VLAN classification.
    Classified {
        /// The VLAN.
        vlan: VlanId,
        /// The priority.
        pcp: u8,
        /// Whether a tag was taken off.
        tag_stripped: bool,
    },
    /// Learning the source.
    Learn {
        /// The VLAN.
        vlan: VlanId,
        /// The source.
        mac: MacAddr,
        /// What it would do.
        outcome: Learning,
    },
    /// The unicast destination's FDB lookup.
    Lookup {
        /// The VLAN.
        vlan: VlanId,
        /// The destination.
        mac: MacAddr,
        /// Where it is known, if it is.
        port: Option<PortId>,
    },
    /// Storm control's check for a flooded frame (its budget is not spent by a trace).
    Storm {
        /// The class.
        class: FloodClass,
        /// Within the rate.
        within: bool,
    },
    /// The bridge's decision.
    Decision(Forward),
    /// One egress port's handling.
    Egress {
        /// The port.
        port: PortId,
        /// What happens there.
        action: EgressAction,
    },
}

/// The events of one trace, in order.
#[derive(Debug, Clone, Default)]
pub struct TraceLog {
    events: Vec<TraceEvent>,
    /// Events not kept (past [`MAX_EVENTS`]).
    pub lost: usize,
}

/// Records `event` (built only when there is a trace).
pub fn record(trace: &mut Option<&mut TraceLog>, event: impl FnOnce() -> TraceEvent) {
    if let Some(log) = trace {
        log.push(event());
    }
}

impl TraceLog {
    /// An empty log.
    pub fn new() -> TraceLog {
        TraceLog::default()
    }

    /// Adds an event (dropped past [`MAX_EVENTS`], and counted).
    pub fn push(&mut self, event: TraceEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.lost += 1;
        }
    }

    /// Records what happens at egress port `port`.
    pub fn egress(&mut self, port: PortId, action: EgressAction) {
        self.push(TraceEvent::Egress { port, action });
    }

    /// The events, in order.
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }

    /// The drop reason, if the bridge dropped the frame.
    pub fn dropped(&self) -> Option<DropReason> {
        self.events.iter().find_map(|e| match e {
            TraceEvent::Decision(Forward::Drop(reason)) => Some(*reason),
            _ => None,
        })
    }

    /// The ports the frame would be sent out of, in order (each once).
    pub fn sent_to(&self) -> Vec<PortId> {
        let mut ports: Vec<PortId> = Vec::new();
        for e in &self.events {
            if let TraceEvent::Egress { port, action: EgressAction::WouldSend { .. } } = e {
                if !ports.contains(port) {
                    ports.push(*port);
                }
            }
        }
        ports
    }

    /// The events as report lines, ports named by `name`.
    pub fn steps(&self, name: &dyn Fn(PortId) -> String) -> Vec<TraceStep> {
        self.events.iter().map(|e| step(e, name)).collect()
    }
}

/// One line of a trace report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceStep {
    /// The pipeline stage: `receive`, `stp`, `vlan`, `learn`, `fdb`, `storm`, `decision`,
    /// `egress`.
    pub stage: &'static str,
    /// The port it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The outcome, one word or a drop reason (`would_learn`, `hit`, `flood`, `push_tag`, ...).
    pub result: String,
    /// The particulars.
    pub detail: String,
}

fn vlan_text(vlan: VlanId) -> String {
    if vlan == VlanId::NONE { "untagged (no VLAN)".to_string() } else { format!("VLAN {vlan}") }
}

fn step(event: &TraceEvent, name: &dyn Fn(PortId) -> String) -> TraceStep {
    let s = |stage, port: Option<PortId>, result: &str, detail: String| TraceStep {
        stage,
        port: port.map(name),
        result: result.to_string(),
        detail,
    };
    match event {
        TraceEvent::Received { port, len } => s("receive", Some(*port), "received", format!("{len} bytes")),
        TraceEvent::SpanningTree => s("stp", None, "bpdu", "taken by the spanning tree (not forwarded)".to_string()),
        TraceEvent::Classified { vlan, pcp, tag_stripped } => {
            let how = if *tag_stripped { "tag taken off" } else { "no tag taken off" };
            s("vlan", None, "classified", format!("{}, priority {pcp}, {how}", vlan_text(*vlan)))
        }
        TraceEvent::Learn { vlan, mac, outcome } => {
            let at = format!("{mac} in {}", vlan_text(*vlan));
            match outcome {
                Learning::WouldLearn => s("learn", None, "would_learn", format!("{at}: new entry")),
                Learning::Refresh => s("learn", None, "refresh", format!("{at}: known here, age reset")),
                Learning::WouldMove { from } => s("learn", Some(*from), "moved", format!("{at}: would move here")),
                Learning::Static => s("learn", None, "static", format!("{at}: a static entry holds it")),
                Learning::Pinned { held_on } => {
                    s("learn", Some(*held_on), "refused", format!("{at}: flapping, pinned to this port"))
                }
                Learning::HeldDown { held_on } => {
                    s("learn", Some(*held_on), "refused", format!("{at}: pinned to this port after flapping"))
                }
                Learning::NotLearned => s("learn", None, "not_learned", format!("{at}: learning is off")),
            }
        }
        TraceEvent::Lookup { vlan, mac, port } => match port {
            Some(p) => s("fdb", Some(*p), "hit", format!("{mac} in {} is behind this port", vlan_text(*vlan))),
            None => s("fdb", None, "miss", format!("{mac} in {} is unknown: flood", vlan_text(*vlan))),
        },
        TraceEvent::Storm { class, within } => {
            let class = match class {
                FloodClass::Broadcast => "broadcast",
                FloodClass::Multicast => "multicast",
                FloodClass::UnknownUnicast => "unknown_unicast",
            };
            let result = if *within { "within_rate" } else { "over_rate" };
            s("storm", None, result, format!("storm control for {class}"))
        }
        TraceEvent::Decision(forward) => match forward {
            Forward::Unicast(p) => s("decision", Some(*p), "unicast", "to the port the destination is behind".into()),
            Forward::Flood => s("decision", None, "flood", "to the VLAN's other ports".into()),
            Forward::Group(g) => s("decision", None, "group", format!("to group {g}'s members and router ports")),
            Forward::Routers => s("decision", None, "routers", "to the multicast router ports".into()),
            Forward::Drop(reason) => s("decision", None, "drop", reason.name().to_string()),
        },
        TraceEvent::Egress { port, action } => {
            let port = Some(*port);
            match action {
                EgressAction::Skipped(why) => s("egress", port, "skipped", (*why).to_string()),
                EgressAction::Dropped(reason) => s("egress", port, "drop", reason.name().to_string()),
                EgressAction::Vlan(Egress::Untagged) => s("egress", port, "untagged", "sent without a tag".into()),
                EgressAction::Vlan(Egress::Tagged(push)) => s(
                    "egress",
                    port,
                    "push_tag",
                    format!("tag {:04x} VLAN {} priority {}", push.tpid, push.tci & 0x0fff, push.tci >> 13),
                ),
                EgressAction::Vlan(Egress::NotCarried) => s("egress", port, "not_carried", String::new()),
                EgressAction::BondMember(Some(m)) => s("bond", port, "member", m.clone()),
                EgressAction::BondMember(None) => s("bond", port, "all_members", "broadcast mode".into()),
                EgressAction::Vxlan { vni, remotes, learned } => {
                    let list: Vec<String> = remotes.iter().map(|r| r.to_string()).collect();
                    let how = if *learned { "learned remote" } else { "every flood remote" };
                    s("vxlan", port, "encapsulate", format!("VNI {vni} to {} ({how})", list.join(" ")))
                }
                EgressAction::Suppressed(mac) => s("vxlan", port, "arp_suppressed", format!("answered locally: {mac}")),
                EgressAction::Offload(what) => s("offload", port, "offload", (*what).to_string()),
                EgressAction::WouldSend { len, member } => {
                    let on = member.as_ref().map(|m| format!(" on member {m}")).unwrap_or_default();
                    s("egress", port, "would_send", format!("{len} bytes{on} (not sent: trace)"))
                }
                EgressAction::HandedOff => s("egress", port, "handed_off", "to the worker owning the port".into()),
            }
        }
    }
}
