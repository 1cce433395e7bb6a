//! The AWS emulator: one moto server per test (or demo), on a free 127.0.0.1 port, stopped on
//! drop. moto is installed into `.venv` by `scripts/setup`; without it this fails loudly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-west-2";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

pub struct Moto {
    child: Child,
    pub url: String,
}

/// `TGB_MOTO_SERVER`, or the project's virtualenv.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("TGB_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.venv/bin/moto_server"
            ))
        })
}

/// An SDK configuration pointing at `url` (moto, or a proxy or stand-in in front of it).
pub async fn sdk_config_at(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

impl Moto {
    pub fn start() -> Moto {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "moto_server not found at {}: run `scripts/setup` (it installs the pinned moto[server] into .venv), \
             or set TGB_MOTO_SERVER to a moto_server binary",
            path.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while !moto.answers(port) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start-up with {status}");
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "moto_server did not answer on port {port} within {STARTUP_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Repeatable ids and addresses: a failure seen once can be seen again.
        assert!(
            moto.post(port, "/moto-api/seed?a=42"),
            "seeding moto's random generator failed"
        );
        moto
    }

    fn post(&self, port: u16, path: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request =
            format!("POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }

    fn answers(&self, port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }

    /// An SDK configuration pointing at this server, as `AWS_ENDPOINT_URL` would.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_at(&self.url).await
    }

    /// The environment a `tgb-reconciler` process needs to talk to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
