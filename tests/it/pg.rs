//! A real PostgreSQL cluster for tests: `initdb` into a temp dir, `pg_ctl` on a free port.
//!
//! `Postgres::shared()` starts one cluster per test binary run (the first test to ask starts
//! it) and `fresh_db()` gives each test its own empty database in it, so tests stay fast and
//! independent. `Postgres::start()` gives a test its own cluster (to stop or restart it).
//! PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user (or
//! `vectorway-pg`, created when neither exists). A watchdog shell stops the shared cluster and
//! removes its directory when the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The directory holding `initdb` and `pg_ctl`: `PATH`, else Debian's versioned directory.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(dir) = p.parent() {
            return dir.to_path_buf();
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: no initdb on PATH or in /usr/lib/postgresql/*/bin (bash .ci/run installs it)")
    })
}

/// The unprivileged user the server runs as when we are root; `None` when we are not root.
fn run_as() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    for user in ["postgres", "vectorway-pg"] {
        if Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(user.into());
        }
    }
    let ok = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "vectorway-pg",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "cannot create the unprivileged user vectorway-pg for PostgreSQL"
    );
    Some("vectorway-pg".into())
}

/// `program args…`, as `user` when given.
fn command(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running cluster. Dropping it stops the server and removes its directory.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    user: Option<String>,
    bin: PathBuf,
}

impl Postgres {
    /// A cluster of this test's own.
    pub fn start() -> Self {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::Builder::new().prefix("vw-pg-").tempdir().unwrap();
        if let Some(u) = &user {
            let ok = Command::new("chown")
                .args(["-R", u])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster directory failed");
        }
        let data = dir.path().join("data");
        let out = command(user.as_deref(), &bin.join("initdb"))
            .args(["-A", "trust", "-U", "vw", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            port: 0,
            user,
            bin,
        };
        pg.run_server();
        pg
    }

    /// Starts (or restarts) the server on a free port; retries when the port was taken.
    fn run_server(&mut self) {
        for _ in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB",
                self.dir.path().display()
            );
            let ok = command(self.user.as_deref(), &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-o", &opts, "-l"])
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                self.port = port;
                return;
            }
            self.port = 0;
        }
        panic!(
            "PostgreSQL did not start: see {}",
            self.dir.path().join("server.log").display()
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`); `restart` brings it back on the same port.
    pub fn stop(&self) {
        let _ = command(self.user.as_deref(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }

    pub fn restart(&mut self) {
        self.run_server();
    }

    /// A connection URL for `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://vw@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster shared by every test of this run (started by the first caller).
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            let pg = Self::start();
            pg.watch(std::process::id());
            pg
        })
    }

    /// Stops this cluster and removes its directory once process `pid` has exited (statics
    /// are never dropped, and a killed test run must not leave a server behind).
    fn watch(&self, pid: u32) {
        let ctl = self.bin.join("pg_ctl");
        let data = self.dir.path().join("data");
        let stop = match &self.user {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} -m immediate stop",
                ctl.display(),
                data.display()
            ),
            None => format!("{} -D {} -m immediate stop", ctl.display(), data.display()),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }

    /// A new, empty database; returns its URL.
    pub async fn fresh_db(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The PostgreSQL settings of a gateway on `url`.
pub fn pg_config(url: &str) -> vectorway::config::PostgresConfig {
    vectorway::config::PostgresConfig {
        url: url.into(),
        pool_size: 8,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    }
}

/// True when the suite runs against PostgreSQL (`VECTORWAY_TEST_BACKEND=postgres`).
pub fn wanted() -> bool {
    std::env::var("VECTORWAY_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// A plain client on `url`, for reading what the gateway wrote.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}
