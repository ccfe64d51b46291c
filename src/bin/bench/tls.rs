//! TLS for the Redis anchors. The tracker's requests travel inside its Noise channel
//! (AES-256-GCM), so Redis is measured inside TLS 1.3 too when the installed `redis-server`
//! was built with TLS: a throwaway CA and a server certificate for 127.0.0.1 are made with the
//! `openssl` command, Redis gets a `--tls-port` (its plain port stays for the bench's own set-up
//! commands), and the load generator speaks TLS through rustls, driven by the same mio loop as
//! the tracker's connections. Without `openssl` or a TLS build, the anchors stay plain and the
//! report says so.

use crate::procs::TempDir;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The certificates Redis serves and the client configuration that trusts them.
pub struct Tls {
    _dir: TempDir,
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ClientConfig>,
}

impl Tls {
    /// A CA and a server certificate for 127.0.0.1, made with the `openssl` command.
    pub fn make() -> Result<Tls, String> {
        let dir = TempDir::new("bench-tls")?;
        let p = |f: &str| dir.path().join(f);
        let (ca, ca_key, cert, key, csr, ext) = (
            p("ca.pem"),
            p("ca.key"),
            p("redis.pem"),
            p("redis.key"),
            p("redis.csr"),
            p("san.ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n")
            .map_err(|e| format!("cannot write {}: {e}", ext.display()))?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=bench CA"],
            ]
            .concat(),
            &[("-keyout", &ca_key), ("-out", &ca)],
        )?;
        openssl(
            &[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]].concat(),
            &[("-keyout", &key), ("-out", &csr)],
        )?;
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[
                ("-in", &csr),
                ("-CA", &ca),
                ("-CAkey", &ca_key),
                ("-extfile", &ext),
                ("-out", &cert),
            ],
        )?;
        let config = client_config(&ca)?;
        Ok(Tls {
            _dir: dir,
            ca,
            cert,
            key,
            config,
        })
    }

    /// The arguments that make `redis-server` listen with TLS on `port` (clients need no
    /// certificate) and, as a replica, reach its primary over TLS.
    pub fn redis_args(&self, port: u16) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            s(&self.cert),
            "--tls-key-file".into(),
            s(&self.key),
            "--tls-ca-cert-file".into(),
            s(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// A client configuration trusting only the CA in `ca` (TLS 1.3 and 1.2, ring's suites).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read the bench CA {}: {e}", ca.display()))?
    {
        let c = c.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("the bench CA {} is not usable: {e}", ca.display()))?;
    }
    // ring's provider is deprecated only for lacking post-quantum key exchange, which a
    // loopback bench does not need; the alternative (aws-lc-rs) is a C build with cmake.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A blocking connect and handshake with `config`.
pub fn connect_with(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> Result<TlsStream<std::net::TcpStream>, String> {
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    let _ = sock.set_nodelay(true);
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut conn = ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("TLS client for {addr}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    }
    Ok(TlsStream { conn, sock })
}

/// A rustls client over a socket, blocking or not: `read`/`write` return `WouldBlock` exactly
/// when the socket does, like `SecureStream`, so the load generator drives both alike.
pub struct TlsStream<S> {
    conn: ClientConnection,
    pub sock: S,
}

impl<S> TlsStream<S> {
    pub fn map_socket<T>(self, f: impl FnOnce(S) -> T) -> TlsStream<T> {
        TlsStream {
            conn: self.conn,
            sock: f(self.sock),
        }
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// Hands queued records to the socket until it is empty or would block.
    fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        match self.push() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()?;
        self.sock.flush()
    }
}

/// Runs `openssl <args> <flag path>...`, quietly; its error output on failure.
fn openssl(args: &[&str], files: &[(&str, &PathBuf)]) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Conns, Plan, Proto, SetUp};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A stand-in for Redis behind TLS with the bench's certificates: `+PONG` to each line,
    /// until the client closes. Returns how many it answered.
    fn tls_pong_server(tls: &Tls) -> (SocketAddr, std::thread::JoinHandle<u64>) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
            .expect("read the server certificate")
            .collect::<Result<_, _>>()
            .expect("parse the server certificate");
        let key = PrivateKeyDer::from_pem_file(&tls.key).expect("read the server key");
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = l.local_addr().expect("local_addr");
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let conn = ServerConnection::new(Arc::new(config)).expect("server connection");
            let mut r = std::io::BufReader::new(StreamOwned::new(conn, s));
            let mut answered = 0;
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                answered += 1;
                if r.get_mut().write_all(b"+PONG\r\n").is_err() {
                    break;
                }
            }
            answered
        });
        (addr, h)
    }

    #[test]
    fn the_load_generator_speaks_tls_through_its_mio_loop() {
        let tls = Tls::make().expect("certificates (needs the openssl command)");
        let (addr, server) = tls_pong_server(&tls);
        let stream = connect_with(&tls.config(), addr).expect("TLS handshake");
        let mut conns = Conns::new(vec![SetUp::Tls(Box::new(stream))], 1).expect("conns");
        let plan = Plan {
            depth: 4,
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(150),
        };
        let st = conns
            .run(Proto::Redis, plan, |_, _, out| {
                out.extend_from_slice(b"PING\r\n")
            })
            .expect("the run");
        drop(conns);
        let answered = server.join().expect("fake server");
        assert!(st.replies > 0, "no reply came back through TLS");
        assert!(
            st.replies <= answered,
            "{} replies, {answered} sent",
            st.replies
        );
        assert_eq!(st.errors, 0);
    }

    #[test]
    fn a_server_with_another_certificate_is_refused() {
        let ours = Tls::make().expect("certificates");
        let theirs = Tls::make().expect("other certificates");
        let (addr, server) = tls_pong_server(&theirs);
        let err = connect_with(&ours.config(), addr).err();
        assert!(
            err.as_deref().is_some_and(|e| e.contains("handshake")),
            "a certificate from another CA was accepted: {err:?}"
        );
        let _ = server.join();
    }
}
