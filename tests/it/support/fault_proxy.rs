//! A TCP proxy on 127.0.0.1 in front of a real registry that cuts connections: after a given
//! number of bytes sent towards the registry (once, or every time), so uploads drop mid-blob.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Faults {
    /// Bytes forwarded towards the registry, in all.
    pub forwarded: u64,
    /// Cut the connection when `forwarded` would pass this.
    pub cut_at: Option<u64>,
    /// After a cut, cut again this many bytes later (a link that keeps failing).
    pub cut_every: Option<u64>,
    pub cuts: u32,
}

pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Mutex<Faults>>,
}

pub fn start(upstream: u16) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let faults = Arc::new(Mutex::new(Faults::default()));
    let f = faults.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let f = f.clone();
            std::thread::spawn(move || pump_up(client, server, &f));
            std::thread::spawn(move || pump_down(s2, c2));
        }
    });
    FaultProxy { port, faults }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream, faults: &Arc<Mutex<Faults>>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut f = faults.lock().unwrap();
        let mut send = n;
        let mut cut = false;
        if let Some(at) = f.cut_at
            && f.forwarded + n as u64 >= at
        {
            send = (at - f.forwarded.min(at)) as usize;
            cut = true;
            f.cuts += 1;
            f.cut_at = f.cut_every.map(|every| at + every);
        }
        f.forwarded += send as u64;
        drop(f);
        if to.write_all(&buf[..send]).is_err() {
            break;
        }
        if cut {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_down(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
