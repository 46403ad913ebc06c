//! An HTTP proxy on 127.0.0.1 in front of a real registry that answers chosen requests with a
//! fault instead of forwarding them: 502s, 429 with `Retry-After`, or a 401 as when a token
//! expires mid-upload. One request at a time per connection; upstream answers are relayed
//! by their `Content-Length` (what distribution sends). Every request is recorded, so the
//! proxy also serves as the recording proxy that counts writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Rule {
    pub method: &'static str,
    /// A part of the path the request must have.
    pub path: &'static str,
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    /// How many matching requests get the fault.
    pub times: u32,
}

pub struct HttpFaults {
    pub port: u16,
    pub rules: Arc<Mutex<Vec<Rule>>>,
    /// Faults served, as `METHOD path -> status`.
    pub served: Arc<Mutex<Vec<String>>>,
    /// Every request seen, as `METHOD path`.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl HttpFaults {
    /// The requests that change something: POST, PUT, PATCH, DELETE.
    pub fn writes(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| ["POST ", "PUT ", "PATCH ", "DELETE "].iter().any(|m| r.starts_with(m)))
            .cloned()
            .collect()
    }
}

pub fn start(upstream: u16) -> HttpFaults {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rules: Arc<Mutex<Vec<Rule>>> = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (r, s, w) = (rules.clone(), served.clone(), seen.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (r, s, w) = (r.clone(), s.clone(), w.clone());
            std::thread::spawn(move || {
                let _ = serve(client, upstream, &r, &s, &w);
            });
        }
    });
    HttpFaults { port, rules, served, seen }
}

/// A request or status line and its headers.
type Head = (String, Vec<(String, String)>);

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

/// A chunked request body, decoded.
fn read_chunked<R: BufRead>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

fn length(headers: &[(String, String)]) -> u64 {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn serve(
    client: TcpStream,
    upstream: u16,
    rules: &Arc<Mutex<Vec<Rule>>>,
    served: &Arc<Mutex<Vec<String>>>,
    seen: &Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut out = client.try_clone()?;
    let mut reader = BufReader::new(client);
    while let Some((first, headers)) = read_head(&mut reader)? {
        let mut parts = first.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        let (body, headers) = if chunked {
            // A streamed body (a compressed layer's PATCH): read whole, forwarded with its length.
            let body = read_chunked(&mut reader)?;
            let mut headers: Vec<(String, String)> =
                headers.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding")).collect();
            headers.push(("Content-Length".into(), body.len().to_string()));
            (body, headers)
        } else {
            let mut body = vec![0; length(&headers) as usize];
            reader.read_exact(&mut body)?;
            (body, headers)
        };
        seen.lock().unwrap().push(format!("{method} {target}"));
        let fault = {
            let mut rules = rules.lock().unwrap();
            rules.iter_mut().find(|r| r.times > 0 && r.method == method && target.contains(r.path)).map(|r| {
                r.times -= 1;
                r.clone()
            })
        };
        if let Some(rule) = fault {
            served.lock().unwrap().push(format!("{method} {target} -> {}", rule.status));
            let body = format!(r#"{{"errors":[{{"code":"FAULT","message":"injected {}"}}]}}"#, rule.status);
            let mut head = format!(
                "HTTP/1.1 {} Fault\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                rule.status,
                body.len()
            );
            for (k, v) in &rule.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            out.write_all(body.as_bytes())?;
            continue;
        }
        // Forward to the registry on a connection of its own, then relay its answer.
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        let mut head = format!("{first}\r\n");
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("connection") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        up.write_all(head.as_bytes())?;
        up.write_all(&body)?;
        let mut upr = BufReader::new(up);
        let Some((status, rheaders)) = read_head(&mut upr)? else { return Ok(()) };
        let mut resp = format!("{status}\r\n");
        for (k, v) in &rheaders {
            if !k.eq_ignore_ascii_case("connection") {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        resp.push_str("\r\n");
        out.write_all(resp.as_bytes())?;
        if method != "HEAD" {
            let n = length(&rheaders);
            std::io::copy(&mut (&mut upr).take(n), &mut out)?;
        }
    }
    Ok(())
}
