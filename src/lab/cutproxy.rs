//! Fault injection for the SFTP fetch: a TCP forwarder that cuts each listen address's first
//! connection after a fixed number of bytes towards the client, as a flaky link would.
//!
//! Shape: one accept thread polls every listener with mio (one per emulated device, so thousands);
//! each accepted connection gets a thread that dials upstream and pumps upstream -> client, plus a
//! second thread pumping client -> upstream, both with blocking copies through large buffers
//! (captures are hundreds of MB). Invariant: the cut connection's client receives exactly
//! `cut_after` bytes and then end-of-stream; every later connection is forwarded untouched,
//! half-closes included.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

const BUF_SIZE: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers live on the heap, so pump threads need little stack.
const PUMP_STACK: usize = 128 * 1024;

/// Sockets of live connections, so that `shutdown` can end them instead of leaving the pump
/// threads running after the lab is torn down.
type Live = Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>;

pub struct CutProxy {
    acceptor: Option<super::acceptor::Acceptor>,
    live: Live,
}

impl CutProxy {
    /// Stops accepting, joins the accept thread and ends every forwarded connection.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        acceptor.shutdown();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for (client, upstream) in live.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// For each (listen_addr, upstream_addr) pair: accept on listen_addr, forward bytes both ways to
/// upstream_addr. The FIRST connection accepted on each listen_addr is closed (both sides,
/// abruptly: shutdown both sockets) after `cut_after` bytes have gone upstream->client; later
/// connections are forwarded in full.
pub fn start(pairs: Vec<(SocketAddr, SocketAddr)>, cut_after: u64) -> io::Result<CutProxy> {
    let mut listeners = Vec::with_capacity(pairs.len());
    let mut upstreams = Vec::with_capacity(pairs.len());
    for (listen, upstream) in pairs {
        let listener = mio::net::TcpListener::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cut proxy: bind {listen}: {e}")))?;
        listeners.push(listener);
        upstreams.push(upstream);
    }
    // The next connection accepted on each listener is the one to cut.
    let mut cut_pending = vec![true; upstreams.len()];
    let live: Live = Arc::default();
    let conns = Arc::clone(&live);
    let mut next_id = 0u64;
    let acceptor =
        super::acceptor::Acceptor::start("cut proxy", listeners, move |i, client, peer| {
            let limit = std::mem::replace(&mut cut_pending[i], false).then_some(cut_after);
            next_id += 1;
            let conn = Conn {
                id: next_id,
                client,
                peer,
                upstream: upstreams[i],
                limit,
            };
            let live = Arc::clone(&conns);
            spawn_named("lab-cutproxy-conn", move || conn.run(&live));
        })?;
    Ok(CutProxy {
        acceptor: Some(acceptor),
        live,
    })
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    match std::thread::Builder::new()
        .name(name.into())
        .stack_size(PUMP_STACK)
        .spawn(f)
    {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("cut proxy: spawning {name}: {e}");
            None
        }
    }
}

struct Conn {
    id: u64,
    client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    /// Bytes upstream -> client before the cut; `None` forwards everything.
    limit: Option<u64>,
}

impl Conn {
    fn run(self, live: &Live) {
        let Conn {
            id,
            client,
            peer,
            upstream,
            limit,
        } = self;
        let up = match setup(&client, upstream) {
            Ok(up) => up,
            Err(e) => {
                log::warn!("cut proxy: {peer} -> {upstream}: {e}");
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        };
        let clones = (
            client.try_clone(),
            up.try_clone(),
            client.try_clone(),
            up.try_clone(),
        );
        let (Ok(client_r), Ok(up_w), Ok(reg_client), Ok(reg_up)) = clones else {
            log::warn!("cut proxy: {peer} -> {upstream}: cannot clone sockets");
            return;
        };
        live.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (reg_client, reg_up));
        let forward = spawn_named("lab-cutproxy-fwd", move || {
            pump(client_r, up_w, None);
        });
        match forward {
            None => {
                let _ = client.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
            }
            Some(forward) => {
                if let Some(sent) = pump(up, client, limit) {
                    log::info!("cut proxy: cut {peer} <- {upstream} after {sent} bytes");
                }
                // Deregister only when both directions are done, so `shutdown` can still end a
                // client that keeps sending after upstream finished.
                let _ = forward.join();
            }
        }
        live.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

fn setup(client: &TcpStream, upstream: SocketAddr) -> io::Result<TcpStream> {
    // mio hands out non-blocking sockets; the pumps want blocking ones.
    client.set_nonblocking(false)?;
    client.set_nodelay(true)?;
    let up = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {upstream}: {e}")))?;
    up.set_nodelay(true)?;
    Ok(up)
}

/// Copies `from` -> `to` until EOF (propagated as a half-close) or error (both sockets shut).
/// With a limit, stops after exactly that many bytes and shuts both sockets: the cut. Returns
/// the byte count when it cut.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<u64>) -> Option<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut sent = 0u64;
    let cut = |from: &TcpStream, to: &TcpStream| {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    };
    loop {
        let room = match limit {
            Some(l) if sent >= l => {
                cut(&from, &to);
                return Some(sent);
            }
            Some(l) => usize::try_from(l - sent)
                .unwrap_or(usize::MAX)
                .min(buf.len()),
            None => buf.len(),
        };
        let n = match from.read(&mut buf[..room]) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return None;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                cut(&from, &to);
                return None;
            }
        };
        if to.write_all(&buf[..n]).is_err() {
            cut(&from, &to);
            return None;
        }
        sent += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Upstream: for each connection, reads a line and answers with `data` then closes.
    fn upstream(data: Arc<Vec<u8>>, connections: usize) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (mut s, _) = listener.accept().unwrap();
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                requests.push(String::from_utf8(line).unwrap());
                // The cut connection's writes fail part-way: expected.
                let _ = s.write_all(&data);
            }
            requests
        });
        (addr, t)
    }

    fn fetch(addr: SocketAddr, request: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A reset after the cut is as good as an EOF.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("reading from the proxy: {e}"),
            }
        }
    }

    #[test]
    fn first_connection_is_cut_later_ones_are_whole() {
        let data = Arc::new(pattern(3 * BUF_SIZE + 12_345));
        for cut_after in [0u64, 1, 1000, BUF_SIZE as u64 + 7] {
            let (up_a, up_a_thread) = upstream(data.clone(), 3);
            let (up_b, up_b_thread) = upstream(data.clone(), 1);
            let (listen_a, listen_b) = (free_addr(), free_addr());
            let proxy = start(vec![(listen_a, up_a), (listen_b, up_b)], cut_after).unwrap();

            let first = fetch(listen_a, "one");
            assert_eq!(first.len() as u64, cut_after, "cut_after {cut_after}");
            assert_eq!(first[..], data[..first.len()]);
            for _ in 0..2 {
                assert_eq!(
                    fetch(listen_a, "again").len(),
                    data.len(),
                    "cut_after {cut_after}"
                );
            }
            // Each listen address has its own "first" connection.
            assert_eq!(fetch(listen_b, "b").len() as u64, cut_after);

            // A cut at 0 bytes may beat the first request line upstream, so only later ones count.
            assert_eq!(up_a_thread.join().unwrap()[1..], ["again", "again"]);
            up_b_thread.join().unwrap();
            proxy.shutdown();
            assert!(
                TcpStream::connect(listen_a).is_err(),
                "listener still open after shutdown"
            );
        }
    }

    #[test]
    fn half_close_is_forwarded() {
        // An echo upstream that answers only once the client has finished sending.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(&got).unwrap();
            }
        });
        let listen = free_addr();
        let proxy = start(vec![(listen, up)], u64::MAX).unwrap();
        for _ in 0..2 {
            let mut s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let payload = pattern(BUF_SIZE * 2 + 1);
            s.write_all(&payload).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back, payload);
        }
        echo.join().unwrap();
        proxy.shutdown();
    }
}
