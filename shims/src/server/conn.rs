//! The shim's connections: accepting them, buffering what they send and
//! what they are sent, cutting requests into lines and stdin into frames,
//! and the attach and events streams a connection may turn into.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use tracing::{debug, warn};

use super::ops::{Reply, RequestError};
use super::{proc_in, Shim, EXIT_GRACE, MAX_ATTACH_BACKLOG, MAX_CONNECTIONS, READ_CHUNK};
use crate::process::{Key, Proc};
use crate::protocol::{
    parse_frame_header, Done, Response, ShimEvent, FRAME_HEADER_LEN, MAX_FRAME_LEN,
    MAX_REQUEST_LEN, STDIN,
};

/// What a connection is doing.
pub(super) enum Mode {
    /// Requests and responses; `waiting` while a `wait` is unanswered.
    Control { waiting: Option<Key> },
    /// The framed byte stream of one process.
    Attach { key: Key, stdin: bool },
    /// A stream of event lines; what the client sends is dropped.
    Events,
}

pub(super) struct Conn {
    pub(super) stream: UnixStream,
    pub(super) rbuf: Vec<u8>,
    pub(super) wbuf: Vec<u8>,
    pub(super) mode: Mode,
    /// The client sent end of file (it may still read).
    pub(super) eof: bool,
    /// Close once `wbuf` is written; read nothing more.
    pub(super) closing: bool,
}

impl Conn {
    pub(super) fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            mode: Mode::Control { waiting: None },
            eof: false,
            closing: false,
        }
    }

    pub(super) fn queue(&mut self, response: &Response) {
        // A Response of serde_json values always serializes.
        if let Ok(mut line) = serde_json::to_vec(response) {
            line.push(b'\n');
            self.wbuf.extend_from_slice(&line);
        }
    }

    pub(super) fn attached_to(&self, key: &Key) -> bool {
        matches!(&self.mode, Mode::Attach { key: k, .. } if k == key)
    }

    pub(super) fn queue_event(&mut self, event: &ShimEvent) {
        // A ShimEvent of strings and numbers always serializes.
        if let Ok(mut line) = serde_json::to_vec(event) {
            line.push(b'\n');
            self.wbuf.extend_from_slice(&line);
        }
    }
}

/// What a control connection's read buffer holds next.
#[derive(Debug, PartialEq)]
pub(super) enum NextLine {
    /// A request line (without its newline; blank lines are skipped).
    Line(Vec<u8>),
    /// More than [`MAX_REQUEST_LEN`] bytes without a newline: the buffer
    /// is dropped, and the connection is to be refused and closed.
    TooLong,
    /// Nothing whole yet: wait for more.
    Partial,
    /// The client sent end of file and nothing is left: close.
    End,
}

/// Takes the next request line from `rbuf`. After the client's end of
/// file (`eof`), a last request without a newline still counts.
pub(super) fn next_line(rbuf: &mut Vec<u8>, eof: bool) -> NextLine {
    loop {
        let line: Vec<u8> = match rbuf.iter().position(|b| *b == b'\n') {
            Some(nl) => rbuf.drain(..=nl).collect(),
            None if rbuf.len() > MAX_REQUEST_LEN => {
                rbuf.clear();
                return NextLine::TooLong;
            }
            None if eof && !rbuf.iter().all(u8::is_ascii_whitespace) => std::mem::take(rbuf),
            None if eof => return NextLine::End,
            None => return NextLine::Partial,
        };
        if !line.iter().all(u8::is_ascii_whitespace) {
            return NextLine::Line(line);
        }
    }
}

/// What an attached connection's read buffer holds next.
#[derive(Debug, PartialEq)]
pub(super) enum NextFrame {
    /// A whole frame: its stream and its bytes (empty: close stdin).
    Frame(u8, Vec<u8>),
    /// A header announcing more than [`MAX_FRAME_LEN`] bytes: the buffer
    /// is dropped, and the client disconnected.
    Oversized(usize),
    /// Nothing whole yet.
    Partial,
}

/// Takes the next stdin frame from `rbuf`.
pub(super) fn next_frame(rbuf: &mut Vec<u8>) -> NextFrame {
    let Some(header) = rbuf.first_chunk::<FRAME_HEADER_LEN>() else {
        return NextFrame::Partial;
    };
    let (stream, len) = parse_frame_header(header);
    if len > MAX_FRAME_LEN {
        rbuf.clear();
        return NextFrame::Oversized(len);
    }
    if rbuf.len() < FRAME_HEADER_LEN + len {
        return NextFrame::Partial;
    }
    let data = rbuf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
    rbuf.drain(..FRAME_HEADER_LEN + len);
    NextFrame::Frame(stream, data)
}

/// Sends `event` to every subscribed connection; one that has let too much
/// pile up is disconnected.
pub(super) fn publish(conns: &mut HashMap<u64, Conn>, event: &ShimEvent) {
    for conn in conns.values_mut() {
        if !matches!(conn.mode, Mode::Events) || conn.closing {
            continue;
        }
        conn.queue_event(event);
        if conn.wbuf.len() > MAX_ATTACH_BACKLOG {
            warn!("an events client does not read its events: disconnecting it");
            conn.wbuf.clear();
            conn.closing = true;
        }
    }
}

/// The exit event of a process that has exited.
pub(super) fn exit_event(proc: &Proc) -> Option<ShimEvent> {
    let exit = proc.exit.as_ref()?;
    Some(ShimEvent::Exit {
        exec_id: proc.exec_id.clone(),
        pid: proc.pid.unwrap_or(0),
        exit_status: exit.exit_status,
        exited_at: exit.exited_at.clone(),
    })
}

/// The exits already recorded, oldest first: what a new subscriber is
/// sent before live events.
pub(super) fn past_exits(init: &Proc, execs: &HashMap<String, Proc>) -> Vec<ShimEvent> {
    let mut exited: Vec<&Proc> = std::iter::once(init)
        .chain(execs.values())
        .filter(|p| p.exit.is_some())
        .collect();
    // RFC 3339 times of one format and zone sort as strings.
    exited.sort_by(|a, b| {
        let at = |p: &Proc| p.exit.as_ref().map(|e| e.exited_at.clone());
        (at(a), &a.exec_id).cmp(&(at(b), &b.exec_id))
    });
    exited.into_iter().filter_map(exit_event).collect()
}

impl Shim {
    pub(super) fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        warn!("too many connections: refusing one");
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!(error = %e, "set a connection non-blocking");
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.conns.insert(id, Conn::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accept");
                    break;
                }
            }
        }
    }

    pub(super) fn read_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; READ_CHUNK];
        match conn.stream.read(&mut buf) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.rbuf.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(e) => {
                debug!(error = %e, "connection failed");
                self.conns.remove(&id);
                return;
            }
        }
        match conn.mode {
            Mode::Control { .. } => self.process_requests(id),
            Mode::Attach { .. } => self.process_frames(id),
            Mode::Events => {
                conn.rbuf.clear();
                if conn.eof {
                    conn.closing = true;
                }
            }
        }
        self.flush_conn(id);
    }

    pub(super) fn flush_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        while !conn.wbuf.is_empty() {
            match conn.stream.write(&conn.wbuf) {
                Ok(0) => {
                    self.conns.remove(&id);
                    return;
                }
                Ok(n) => {
                    conn.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "client went away");
                    self.conns.remove(&id);
                    return;
                }
            }
        }
        if conn.wbuf.is_empty() && conn.closing {
            self.conns.remove(&id);
        }
    }

    /// Handles the complete request lines a control connection has sent,
    /// in order, until one has to wait.
    pub(super) fn process_requests(&mut self, id: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.closing || !matches!(conn.mode, Mode::Control { waiting: None }) {
                break;
            }
            let line = match next_line(&mut conn.rbuf, conn.eof) {
                NextLine::Line(line) => line,
                NextLine::TooLong => {
                    conn.queue(&RequestError::TooLong.response());
                    conn.closing = true;
                    break;
                }
                NextLine::Partial => break,
                NextLine::End => {
                    conn.closing = true;
                    break;
                }
            };
            let reply = self.handle_line(&line);
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match reply {
                Ok(Reply::Answer(response)) => conn.queue(&response),
                Err(e) => {
                    debug!(error = %e, "request refused");
                    conn.queue(&e.response());
                }
                Ok(Reply::Wait(key)) => conn.mode = Mode::Control { waiting: Some(key) },
                Ok(Reply::Attach { key, stdin }) => {
                    conn.queue(&Response::ok(&Done {}));
                    let ended = proc_in(&mut self.init, &mut self.execs, &key)
                        .is_none_or(|p| p.exit.is_some());
                    conn.mode = Mode::Attach { key, stdin };
                    if ended {
                        conn.closing = true;
                    }
                    self.process_frames(id);
                    break;
                }
                Ok(Reply::Events) => {
                    conn.queue(&Response::ok(&Done {}));
                    conn.mode = Mode::Events;
                    conn.rbuf.clear();
                    if conn.eof {
                        conn.closing = true;
                    }
                    for event in past_exits(&self.init, &self.execs) {
                        conn.queue_event(&event);
                    }
                    break;
                }
                Ok(Reply::Exit(response)) => {
                    conn.queue(&response);
                    conn.closing = true;
                    self.begin_exit();
                    break;
                }
            }
        }
        self.flush_conn(id);
    }

    /// Handles the stdin frames an attached client has sent.
    pub(super) fn process_frames(&mut self, id: u64) {
        let Shim {
            init, execs, conns, ..
        } = self;
        let Some(conn) = conns.get_mut(&id) else {
            return;
        };
        let Mode::Attach { key, stdin } = &conn.mode else {
            return;
        };
        let mut proc = proc_in(init, execs, key);
        loop {
            let (stream, data) = match next_frame(&mut conn.rbuf) {
                NextFrame::Frame(stream, data) => (stream, data),
                NextFrame::Oversized(len) => {
                    debug!(
                        len,
                        "attached client sent an oversized frame: disconnecting it"
                    );
                    conn.closing = true;
                    break;
                }
                NextFrame::Partial => break,
            };
            let (true, STDIN, Some(proc)) = (*stdin, stream, proc.as_deref_mut()) else {
                continue;
            };
            if data.is_empty() {
                proc.request_close_stdin();
            } else if !proc.stdin_close && proc.exit.is_none() {
                proc.stdin_queue.extend_from_slice(&data);
            }
        }
        let key = key.clone();
        self.flush_stdin(&key);
    }

    pub(super) fn begin_exit(&mut self) {
        self.exit_by = Some(Instant::now() + EXIT_GRACE);
        // No new clients: the socket disappears now.
        if self.listener.take().is_some() {
            let _ = fs::remove_file(&self.opts.socket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{frame_header, ErrorKind, ExitInfo, Status};

    #[test]
    fn lines_are_cut_at_newlines_and_blank_ones_skipped() {
        let mut rbuf = b"\n  \n{\"op\":\"state\"}\n{\"op\":".to_vec();
        assert_eq!(
            next_line(&mut rbuf, false),
            NextLine::Line(b"{\"op\":\"state\"}\n".to_vec())
        );
        assert_eq!(next_line(&mut rbuf, false), NextLine::Partial);
        assert_eq!(rbuf, b"{\"op\":");
        // After end of file a last line without newline counts.
        assert_eq!(
            next_line(&mut rbuf, true),
            NextLine::Line(b"{\"op\":".to_vec())
        );
        assert_eq!(next_line(&mut rbuf, true), NextLine::End);
        let mut blank = b"  \n \t".to_vec();
        assert_eq!(next_line(&mut blank, true), NextLine::End);
        let mut long = vec![b'x'; MAX_REQUEST_LEN + 1];
        assert_eq!(next_line(&mut long, false), NextLine::TooLong);
        assert!(long.is_empty());
    }

    #[test]
    fn frames_are_cut_by_their_headers() {
        let mut rbuf = frame_header(STDIN, 3).to_vec();
        rbuf.extend_from_slice(b"abc");
        rbuf.extend_from_slice(&frame_header(STDIN, 0));
        rbuf.extend_from_slice(&frame_header(7, 2));
        rbuf.push(b'x');
        assert_eq!(
            next_frame(&mut rbuf),
            NextFrame::Frame(STDIN, b"abc".to_vec())
        );
        assert_eq!(next_frame(&mut rbuf), NextFrame::Frame(STDIN, Vec::new()));
        assert_eq!(next_frame(&mut rbuf), NextFrame::Partial);
        rbuf.push(b'y');
        assert_eq!(next_frame(&mut rbuf), NextFrame::Frame(7, b"xy".to_vec()));
        assert_eq!(next_frame(&mut rbuf), NextFrame::Partial);
        let mut big = frame_header(STDIN, MAX_FRAME_LEN + 1).to_vec();
        assert_eq!(
            next_frame(&mut big),
            NextFrame::Oversized(MAX_FRAME_LEN + 1)
        );
        assert!(big.is_empty());
    }

    /// A connection of `shim` and the client's end.
    fn connect(shim: &mut Shim) -> (u64, UnixStream) {
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let id = shim.next_conn;
        shim.next_conn += 1;
        shim.conns.insert(id, Conn::new(server));
        (id, client)
    }

    fn responses(client: &mut UnixStream) -> Vec<Response> {
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_control_connection_answers_each_request_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let (id, mut client) = connect(&mut shim);
        client
            .write_all(
                b"{\"op\":\"state\"}\n\n  \n{\"op\":\"fly\"}\n{\"op\":\"state\",\"exec_id\":\"x\"}",
            )
            .unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        shim.read_conn(id);
        assert!(shim.conns.contains_key(&id));
        // End of file: the last request still counts, then it is closed.
        shim.read_conn(id);
        assert!(!shim.conns.contains_key(&id));
        let got = responses(&mut client);
        assert_eq!(got.len(), 3, "{got:?}");
        match &got[0] {
            Response::Ok(state) => assert_eq!(state["status"], Status::Created.to_string()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&got[1], Response::Error(r) if r.kind == ErrorKind::InvalidArgument));
        assert!(matches!(&got[2], Response::Error(r) if r.kind == ErrorKind::NotFound));
    }

    #[test]
    fn an_overlong_request_is_refused_and_the_connection_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let (id, mut client) = connect(&mut shim);
        shim.conns.get_mut(&id).unwrap().rbuf = vec![b'x'; MAX_REQUEST_LEN + 1];
        shim.process_requests(id);
        assert!(!shim.conns.contains_key(&id));
        let got = responses(&mut client);
        assert!(
            matches!(&got[..], [Response::Error(r)] if r.message.contains("request longer than")),
            "{got:?}"
        );
    }

    #[test]
    fn an_events_connection_first_gets_the_recorded_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        shim.init.exit = Some(ExitInfo {
            exit_status: 2,
            exited_at: "2024-01-02T03:04:05.000000006Z".into(),
        });
        let (id, mut client) = connect(&mut shim);
        client.write_all(b"{\"op\":\"events\"}\n").unwrap();
        shim.read_conn(id);
        assert!(matches!(shim.conns[&id].mode, Mode::Events));
        publish(&mut shim.conns, &ShimEvent::Oom);
        shim.flush_conn(id);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        shim.read_conn(id);
        assert!(!shim.conns.contains_key(&id));
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], r#"{"ok":{}}"#);
        let exit: ShimEvent = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            exit,
            ShimEvent::Exit {
                exec_id: None,
                pid: 999_999,
                exit_status: 2,
                exited_at: "2024-01-02T03:04:05.000000006Z".into(),
            }
        );
        assert_eq!(lines[2], r#"{"type":"oom"}"#);
    }

    #[test]
    fn an_attached_client_feeds_stdin_with_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let (id, mut client) = connect(&mut shim);
        client
            .write_all(b"{\"op\":\"attach\",\"stdin\":true}\n")
            .unwrap();
        let mut frames = frame_header(7, 3).to_vec();
        frames.extend_from_slice(b"xyz");
        frames.extend_from_slice(&frame_header(STDIN, 3));
        frames.extend_from_slice(b"abc");
        frames.extend_from_slice(&frame_header(STDIN, 0));
        client.write_all(&frames).unwrap();
        shim.read_conn(id);
        // Frames of other streams are dropped; stdin waits for the start.
        assert_eq!(shim.init.stdin_queue, b"abc");
        assert!(shim.init.stdin_close);
        client
            .write_all(&frame_header(STDIN, MAX_FRAME_LEN + 1))
            .unwrap();
        shim.read_conn(id);
        assert!(
            !shim.conns.contains_key(&id),
            "an oversized frame disconnects"
        );
        let mut first = [0u8; 10];
        client.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"{\"ok\":{}}\n");
    }
}
