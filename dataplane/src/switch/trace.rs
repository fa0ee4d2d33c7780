//! `vswitchctl trace`: one frame through the real pipeline as if received on a port — the
//! bridge's ingress (on a copy of its state), the flood loop, each egress port's transmit
//! steps — recorded, with nothing sent, learned or counted.

use super::*;
use crate::trace::{TraceEvent, TraceLog};
use transmit::transmit_traced;

impl SwitchState {
    /// Traces `frame` as received on port `in_port` at `now`: every decision the forwarding
    /// path would make for it, in order. The frame goes nowhere; tables and counters stay as
    /// they were. (A VXLAN port's frame is taken as already decapsulated; a bond's as admitted
    /// by its member.)
    pub fn trace(&mut self, in_port: PortId, frame: &[u8], now: Instant) -> TraceLog {
        let mut log = TraceLog::new();
        let mut buf = FrameBuf::new(MAX_FRAME_LEN);
        let area = buf.receive_area();
        let len = frame.len().min(area.len());
        area[..len].copy_from_slice(&frame[..len]);
        buf.set_received(len);
        log.push(TraceEvent::Received { port: in_port, len });
        if self.bridge.stp() && crate::wire::bpdu::is_bridge_group(buf.frame()) {
            log.push(TraceEvent::SpanningTree);
            return log;
        }
        let decision = self.bridge.trace_ingress(in_port, buf.frame(), &buf.offload, now, &mut log);
        log.push(TraceEvent::Decision(decision.forward));
        let mut scratch = Scratch::new();
        scratch.now = now;
        let mut ports = Vec::new();
        let class = decision.class;
        fan_out(self, in_port, decision.forward, class.vlan, &mut ports, |state, out, flooding| {
            transmit_traced(state, &mut [], out, &mut buf, &class, flooding, &mut scratch, Some(&mut log))
        });
        log
    }
}
