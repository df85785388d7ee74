//! The `switchyard` command line (SPEC section 1).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use switchyard::admin_cli::{self, masters::Action, AdminClient};
use switchyard::config::Config;

/// mimalloc: fewer cycles per allocation than glibc malloc on the request path.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, asked as `malloc` is for an ordinary alignment. Its blocks are multiples
/// of the word size, so `mi_malloc` meets any alignment up to 8; `mi_malloc_aligned`
/// (which the `mimalloc` crate calls for every allocation) leaves its fast path
/// whenever the size's free list is empty, and then, for a size that is not a power
/// of two, over-allocates from another size class: about a third of the allocator's
/// instructions per message (BENCHMARKS.md).
struct Mimalloc;

/// Alignments every mimalloc block meets.
const WORD_ALIGN: usize = 8;

// SAFETY: each call passes the layout's size (and alignment, where it is above what
// every block meets) to the mimalloc function with the same contract, and every
// pointer freed or grown was returned by mimalloc.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if layout.align() <= WORD_ALIGN {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if layout.align() <= WORD_ALIGN {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= WORD_ALIGN {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// `mi_option_arena_eager_commit` in mimalloc's option enum (`mimalloc.h` of the v3
/// sources libmimalloc-sys builds; the same index in v2). Check it on an upgrade.
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Runs before `main` (an `.init_array` entry), because mimalloc reserves its arena at
/// the first allocation and keeps the commit mode it was reserved with.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

/// Commits the allocator's arena page by page as it is used instead of all at once.
/// On Linux mimalloc's default commits it eagerly, and then the memory it purges stays
/// counted in RSS; committed on demand, purged memory is given back. Measured: an
/// empty start at 9.3 MB instead of 20 MB, and a backlog of a million messages at +5 MB
/// over that instead of +7 to +11 MB (BENCHMARKS.md).
#[cfg(target_os = "linux")]
extern "C" fn tune_allocator() {
    // SAFETY: sets one option's default; mimalloc allows it at any time, before its
    // own initialisation included. A default, so MIMALLOC_ARENA_EAGER_COMMIT still
    // overrides it.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Load-balancing, failover and store-and-forward proxy for message send endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(
            long,
            env = "SWITCHYARD_CONFIG",
            default_value = "config/switchyard.toml"
        )]
        config: PathBuf,
    },
    /// Validate a config file: print every error with its key path, exit 0 (valid) or 1.
    Check {
        /// Config file.
        #[arg(
            long,
            env = "SWITCHYARD_CONFIG",
            default_value = "config/switchyard.toml"
        )]
        config: PathBuf,
    },
    /// Run three simulated masters and the proxy with a built-in config.
    Demo {
        /// Client listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Take the primary master down after a while and bring it back, again and
        /// again, to show degraded -> failover -> failback as it happens.
        #[arg(long)]
        chaos: bool,
        /// Three nodes in cluster mode on one etcd, started here (needs `etcd`
        /// installed: Debian's etcd-server). Nodes listen on the ports after --listen
        /// and --admin-listen.
        #[arg(long)]
        cluster: bool,
    },
    /// Run a simulated master account.
    MockMaster {
        /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free one).
        #[arg(long)]
        listen: SocketAddr,
        /// The id it reports in its answers.
        #[arg(long, default_value = "mock-master")]
        id: String,
        /// Delay before each answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Share of sends answered 503, from 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Remember the Idempotency-Key of every accepted send, for
        /// `GET /received/keys` (tests: what arrived, and how often).
        #[arg(long)]
        record_keys: bool,
        /// Answer 429 to a send that would make more than this many accepted in the
        /// last second, as a provider that throttles an account does.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
        /// Answer 403 {"error": "account banned"} to every send after this many
        /// accepted, as a provider that bans an account does.
        #[arg(long)]
        ban_after: Option<u64>,
        /// PEM certificate chain: with --tls-key, the mock speaks HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Print the HA status as a table.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Admin control of one master, through the admin API.
    Masters {
        #[command(subcommand)]
        action: MastersAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, retry or delete dead letters, through the admin API.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLettersAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cluster mode: the nodes and the leader, or hand leadership on.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cluster mode: push the shared part of the config to every node.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the audit trail as a table, newest first.
    Events {
        /// How many events to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is, and its token.
#[derive(Args)]
struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// Bearer token, when the admin API has one.
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN_TOKEN")]
    token: Option<String>,
    /// PEM bundle to trust for an https --admin instead of the system roots.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
}

impl AdminArgs {
    fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin, self.token.as_deref()).with_ca(self.ca.clone())
    }
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Print the cluster as this node sees it: state, leader, term, every node.
    Status,
    /// Ask the leader (the node --admin names) to hand leadership on.
    Resign,
}

#[derive(Subcommand)]
enum MastersAction {
    /// Take the master out of rotation.
    Disable { id: String },
    /// Put the master back into rotation.
    Enable { id: String },
    /// Give the master no new messages; those under way finish, and `status` shows it
    /// `drained` once none is left.
    Drain { id: String },
    /// Put the master's best standby in its place.
    Failover { id: String },
    /// Give the master its place back from the standby that took it.
    Failback { id: String },
    /// Lift a suspension after a ban answer: the master comes back through slow start
    /// and warm-up.
    Reinstate { id: String },
}

impl MastersAction {
    fn split(&self) -> (Action, &str) {
        match self {
            MastersAction::Disable { id } => (Action::Disable, id),
            MastersAction::Enable { id } => (Action::Enable, id),
            MastersAction::Drain { id } => (Action::Drain, id),
            MastersAction::Failover { id } => (Action::Failover, id),
            MastersAction::Failback { id } => (Action::Failback, id),
            MastersAction::Reinstate { id } => (Action::Reinstate, id),
        }
    }
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Store FILE as the cluster's shared config ([routing], [health], [failover],
    /// [alerts], [queue] without path, [[masters]], [[clients]]); every node applies it.
    Push {
        /// TOML file with the shared part only.
        file: PathBuf,
        /// The config_version the file is based on (default: the one the node reports
        /// in /health now). A push fails if the cluster has moved past it.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// Print the dead letters as a table, oldest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Queue a dead letter (or all of them) for delivery again.
    Retry {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every dead letter, once each.
        #[arg(long)]
        all: bool,
    },
    /// Delete a dead letter for good.
    Delete {
        /// The dead letter's id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    // `run` takes its log format from the config, so the config is read first.
    let loaded = match &cli.command {
        Command::Run { config } => match load(config) {
            Ok(loaded) => Some(loaded),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    switchyard::telemetry::init_logging(
        loaded
            .as_ref()
            .map_or_else(Default::default, |l| l.config.log),
    );
    switchyard::telemetry::count_panics();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one worker thread per core, or `TOKIO_WORKER_THREADS` of them.
/// With one worker (the variable set to 1, or a one-core machine) it is tokio's
/// current-thread scheduler, which runs the same tasks without the cross-thread
/// wake-ups and run-queue handoffs the multi-thread one keeps ready for stealing.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let workers = match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "TOKIO_WORKER_THREADS must be a whole number above 0, not {v:?}"
                ))
            }
        },
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} masters, strategy {})",
                path.display(),
                c.masters.len(),
                c.routing.strategy.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A config file read and checked for `run`, with its content hash.
struct Loaded {
    config: Config,
    hash: u64,
}

fn load(path: &std::path::Path) -> anyhow::Result<Loaded> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?;
    let config = Config::from_toml(&text).map_err(|errors| {
        let list: Vec<String> = errors.0.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid config {}:\n{}", path.display(), list.join("\n"))
    })?;
    Ok(Loaded {
        hash: config.digest(&bytes),
        config,
    })
}

/// Runs `command`; `loaded` is the config `run` was given, read before logging started.
async fn run(command: Command, loaded: Option<Loaded>) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let Loaded {
                config: parsed,
                hash,
            } = match loaded {
                Some(loaded) => loaded,
                None => load(&config)?,
            };
            let scheme = |tls: bool| if tls { "https" } else { "http" };
            let (client, admin) = (
                scheme(parsed.server.tls.is_some()),
                scheme(parsed.server.admin_tls.is_some()),
            );
            let running = switchyard::app::start(parsed, hash, Some(config)).await?;
            println!(
                "switchyard listening on {client}://{} (admin {admin}://{})",
                running.listen, running.admin_listen
            );
            switchyard::app::wait_for_signal().await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            running.shutdown().await;
            Ok(())
        }
        Command::Demo {
            listen,
            admin_listen,
            chaos,
            cluster: true,
        } => switchyard::demo::cluster::run(listen, admin_listen, chaos).await,
        Command::Demo {
            listen,
            admin_listen,
            chaos,
            cluster: false,
        } => switchyard::demo::run(listen, admin_listen, chaos).await,
        Command::MockMaster {
            listen,
            id,
            latency_ms,
            fail_rate,
            record_keys,
            rate_limit,
            ban_after,
            tls_cert,
            tls_key,
        } => {
            if !(0.0..=1.0).contains(&fail_rate) {
                anyhow::bail!("--fail-rate must be between 0 and 1");
            }
            let mut mock = switchyard::mock::MockMaster::new(
                id.clone(),
                Duration::from_millis(latency_ms),
                fail_rate,
            );
            if record_keys {
                mock = mock.recording_keys();
            }
            if let Some(r) = rate_limit {
                mock = mock.rate_limited(r);
            }
            if let Some(n) = ban_after {
                mock = mock.banned_after(n);
            }
            let mock = Arc::new(mock);
            let (trigger, shutdown) = switchyard::server::shutdown_pair();
            let tls = match tls_cert.zip(tls_key) {
                Some((cert, key)) => Some(
                    switchyard::tls::listen::acceptor(&cert, &key)
                        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?,
                ),
                None => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let (addr, task) = switchyard::mock::start_tls(mock, listen, tls, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            println!("mock-master {id} listening on {scheme}://{addr}");
            switchyard::app::wait_for_signal().await;
            trigger.trigger();
            task.await?;
            Ok(())
        }
        Command::Status { admin } => switchyard::status_cli::run(&admin.client()).await,
        Command::Masters { action, admin } => {
            let (action, id) = action.split();
            admin_cli::masters::run(&admin.client(), action, id).await
        }
        Command::DeadLetters { action, admin } => {
            let admin = admin.client();
            match action {
                DeadLettersAction::List { limit } => {
                    admin_cli::dead_letters::list(&admin, limit).await
                }
                DeadLettersAction::Retry { id: Some(id), .. } => {
                    admin_cli::dead_letters::retry(&admin, &id).await
                }
                DeadLettersAction::Retry { id: None, .. } => {
                    admin_cli::dead_letters::retry_all(&admin).await
                }
                DeadLettersAction::Delete { id } => {
                    admin_cli::dead_letters::delete(&admin, &id).await
                }
            }
        }
        Command::Cluster { action, admin } => match action {
            ClusterAction::Status => admin_cli::cluster::status(&admin.client()).await,
            ClusterAction::Resign => admin_cli::cluster::resign(&admin.client()).await,
        },
        Command::Config {
            action: ConfigAction::Push { file, if_match },
            admin,
        } => admin_cli::config::push(&admin.client(), &file, if_match).await,
        Command::Events { limit, admin } => admin_cli::events::run(&admin.client(), limit).await,
        // Answered in `main` before any runtime starts.
        Command::Check { .. } => Ok(()),
    }
}
