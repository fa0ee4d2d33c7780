//! `vswitchctl capture`: a capture streams on a control connection of its own. The client
//! sends one [`Request::Capture`] line; the daemon taps the ports (see
//! [`vswitchd_dataplane::capture`]), answers one JSON line, then sends pcapng bytes in chunks,
//! each a 4-byte big-endian length and that many bytes of whole blocks, until the count is
//! reached or the client shuts down its sending side (or goes away); a chunk of length 0 ends
//! the stream and a JSON [`Summary`] line follows. The taps are removed when the capture ends, however it ends.
//!
//! The daemon never waits for the reader on the forwarding path: frames the reader is too slow
//! for are lost at the tap and counted, per port (in the summary and in the pcapng interface
//! statistics, `isb_ifdrop`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::debug;
use vswitchd_dataplane::PortId;
use vswitchd_dataplane::capture::{self, POOL, SNAPLEN, Sink};
use vswitchd_dataplane::switch::SwitchHandle;

use crate::ctl::{Request, Response};
use crate::pcapng;

const DATAPLANE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the daemon waits for a reader that takes nothing before it ends the capture.
const STALLED_READER: Duration = Duration::from_secs(30);

/// How often an idle capture checks whether its client is still there.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Records written per chunk at most.
const CHUNK_RECORDS: usize = 64;

/// The largest chunk a client accepts.
const MAX_CHUNK: usize = 16 << 20;

/// What the daemon says before the pcapng bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The ports captured, in interface order.
    pub ports: Vec<String>,
    /// Bytes kept of each frame.
    pub snaplen: usize,
    /// Frames that may wait for the reader before more are lost.
    pub pool: usize,
}

/// What the daemon says after the pcapng bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Frames written.
    pub captured: u64,
    /// Frames lost because the reader was behind, in all.
    pub lost: u64,
    /// The same, per port (in interface order).
    pub lost_per_port: Vec<u64>,
}

/// The description of every interface: where in the switch its frames were seen.
pub const CAPTURE_POINT: &str = "vswitchd capture point: inbound frames after ingress VLAN translation, outbound \
     frames before egress tagging; a frame in a VLAN carries an 802.1Q tag of that VLAN";

/// Removes the taps when the capture ends.
struct Taps<'a> {
    switch: &'a SwitchHandle,
    sink: Arc<Sink>,
}

impl Drop for Taps<'_> {
    fn drop(&mut self) {
        let sink = Arc::clone(&self.sink);
        let _ = self.switch.call(move |state, _| state.remove_capture(&sink), DATAPLANE_TIMEOUT);
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn write_line(mut stream: &UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn write_chunk(mut stream: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
    stream.write_all(bytes)
}

/// Whether the client has shut down its sending side (how `vswitchctl` asks to stop on
/// SIGINT), closed the connection, or sent anything (a capture takes no more requests).
fn client_done(mut stream: &UnixStream) -> bool {
    if stream.set_read_timeout(Some(Duration::from_millis(1))).is_err() {
        return true;
    }
    match stream.read(&mut [0u8; 1]) {
        Ok(0 | 1) => true, // end of file, or a byte: either way the client is done
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted),
    }
}

/// Serves a capture request on `stream` until `count` frames are written or the client goes.
pub fn serve(stream: &UnixStream, switch: &SwitchHandle, ports: &[String], drops: bool, count: Option<u64>) {
    let refuse = |text: String| {
        let _ = stream.set_write_timeout(Some(DATAPLANE_TIMEOUT));
        let response = Response { ok: false, result: None, error: Some(text), refused: true };
        let _ = write_line(stream, &response);
    };
    if ports.is_empty() {
        return refuse("capture: name at least one port".into());
    }
    if let Some((_, twice)) = ports.iter().enumerate().find(|(i, p)| ports[..*i].contains(p)) {
        return refuse(format!("capture: port {twice} named twice"));
    }
    let sink = Sink::new(ports.len(), POOL, drops);
    let (names, tapped) = (ports.to_vec(), Arc::clone(&sink));
    let installed = switch.call(
        move |state, _| {
            let ids = names
                .iter()
                .map(|name| state.port_by_name(name).map(|p| p.id).ok_or_else(|| format!("capture: no port {name}")))
                .collect::<Result<Vec<PortId>, String>>()?;
            state.add_capture(&tapped, &ids);
            Ok(())
        },
        DATAPLANE_TIMEOUT,
    );
    match installed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return refuse(e),
        Err(e) => return refuse(e.to_string()),
    }
    let _taps = Taps { switch, sink: Arc::clone(&sink) };
    let _ = stream.set_write_timeout(Some(STALLED_READER));
    match stream_frames(stream, &sink, ports, count) {
        Ok(captured) => {
            let lost_per_port = sink.lost();
            let mut tail = Vec::new();
            let at = now_nanos();
            for (interface, &lost) in lost_per_port.iter().enumerate() {
                pcapng::statistics(&mut tail, interface as u32, at, lost);
            }
            let summary = Summary { captured, lost: lost_per_port.iter().sum(), lost_per_port };
            let ended = write_chunk(stream, &tail).and_then(|()| write_chunk(stream, &[]));
            let _ = ended.and_then(|()| write_line(stream, &summary));
        }
        Err(e) => debug!(error = %e, "capture client gone"),
    }
}

/// Writes the reply line, the pcapng header and the frames; returns how many frames it wrote
/// before `count` was reached, or fails when the client goes.
fn stream_frames(stream: &UnixStream, sink: &Sink, ports: &[String], count: Option<u64>) -> io::Result<u64> {
    let started = Started { ports: ports.to_vec(), snaplen: SNAPLEN, pool: POOL };
    let result = serde_json::to_value(&started).map_err(io::Error::other)?;
    write_line(stream, &Response { ok: true, result: Some(result), error: None, refused: false })?;
    let mut chunk = Vec::with_capacity(CHUNK_RECORDS * (SNAPLEN + 64));
    pcapng::section_header(&mut chunk, concat!("vswitchd ", env!("CARGO_PKG_VERSION")));
    for port in ports {
        pcapng::interface(&mut chunk, port, CAPTURE_POINT, SNAPLEN as u32);
    }
    write_chunk(stream, &chunk)?;
    let mut captured = 0u64;
    let limit = count.unwrap_or(u64::MAX);
    let mut checked = Instant::now();
    while captured < limit {
        // Busy or idle, the client is asked whether it is done every IDLE_CHECK.
        let first = sink.next(IDLE_CHECK);
        if checked.elapsed() >= IDLE_CHECK || first.is_none() {
            checked = Instant::now();
            if client_done(stream) {
                if let Some(record) = first {
                    sink.recycle(record);
                }
                break; // the summary follows, if the client is still there to read it
            }
        }
        let Some(first) = first else { continue };
        chunk.clear();
        let mut next = Some(first);
        let mut records = 0;
        while let Some(record) = next.take() {
            let direction = match record.direction {
                capture::Direction::Inbound => pcapng::Direction::Inbound,
                capture::Direction::Outbound => pcapng::Direction::Outbound,
            };
            let comment = record.drop.map(|reason| format!("drop: {}", reason.name()));
            pcapng::packet(
                &mut chunk,
                record.interface,
                record.timestamp_ns,
                record.frame(),
                record.orig_len,
                direction,
                comment.as_deref(),
            );
            sink.recycle(record);
            captured += 1;
            records += 1;
            if records < CHUNK_RECORDS && captured < limit {
                next = sink.try_next();
            }
        }
        write_chunk(stream, &chunk)?;
    }
    Ok(captured)
}

/// Why a client-side capture failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused the request (`refused`: as wrong, nothing was done).
    #[error("{message}")]
    Refused {
        /// What it said.
        message: String,
        /// Refused as a wrong request.
        refused: bool,
    },
    /// The socket failed or the daemon broke off.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Writing the pcapng failed (a broken pipe: its reader went away).
    #[error("cannot write the capture: {0}")]
    Output(io::Error),
}

/// Asks the daemon at `socket` for a capture and writes the pcapng bytes to `out` as they come,
/// flushing after each chunk; returns the daemon's summary ([`ClientError::Output`] if `out`
/// fails: the connection closes and the daemon ends the capture). Once the capture runs, `on_stop` is
/// given a handle on the connection: shutting down its writing side asks the daemon to end the
/// capture (with its summary). A failure to write to `out` (its
/// reader went away) ends the capture quietly: the daemon sees the connection close.
pub fn run_client(
    socket: &Path,
    ports: Vec<String>,
    drops: bool,
    count: Option<u64>,
    out: &mut dyn Write,
    on_stop: impl FnOnce(UnixStream),
) -> Result<Summary, ClientError> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {}: {e}", socket.display())))?;
    let mut line = serde_json::to_vec(&Request::Capture { ports, drops, count }).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
    reader.read_line(&mut header)?;
    let response: Response = serde_json::from_str(&header).map_err(io::Error::other)?;
    if !response.ok {
        let message = response.error.unwrap_or_else(|| "vswitchd refused the capture".into());
        return Err(ClientError::Refused { message, refused: response.refused });
    }
    reader.get_ref().set_read_timeout(None)?;
    if let Ok(stop) = reader.get_ref().try_clone() {
        on_stop(stop);
    }
    let mut chunk = Vec::new();
    loop {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            let mut summary = String::new();
            reader.read_line(&mut summary)?;
            return Ok(serde_json::from_str(&summary).map_err(io::Error::other)?);
        }
        if len > MAX_CHUNK {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "capture chunk too long").into());
        }
        chunk.resize(len, 0);
        reader.read_exact(&mut chunk)?;
        out.write_all(&chunk).and_then(|()| out.flush()).map_err(ClientError::Output)?;
    }
}
