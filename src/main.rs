use std::{io::Write as _, time::SystemTime};

use rds_csi_controller::{
    attachment::format_micros, cli, kube, run, schedule, takeover, EXIT_OK, EXIT_USAGE,
};

#[cfg(all(target_os = "linux", any(test, target_env = "musl")))]
mod allocator;

// The static build's allocator (why: src/allocator.rs).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() {
    let parsed = cli::parse(std::env::args().skip(1), |k| std::env::var(k).ok());
    let args = match parsed {
        Ok(cli::Command::Run(a)) => a,
        Ok(cli::Command::SnapshotSchedule(rest)) => std::process::exit(snapshot_schedule(rest)),
        Ok(cli::Command::Takeover(rest)) => std::process::exit(takeover(rest)),
        Ok(cli::Command::Help) => {
            print!("{}", cli::USAGE.help());
            std::process::exit(EXIT_OK);
        }
        Ok(cli::Command::Version) => {
            println!("rds-csi-controller {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(EXIT_OK);
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", cli::USAGE.help());
            std::process::exit(EXIT_USAGE);
        }
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = &args.log_level {
        logger.parse_filters(level);
    }
    // Formatted here, with the time crate the controller uses anyway, so
    // that env_logger's own timestamps (another date library) and colours
    // stay out of the binary.
    match args.log_format {
        cli::LogFormat::Json => logger.format(|buf, record| {
            let line = serde_json::json!({
                "time": format_micros(SystemTime::now()),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
                "fields": fields(record),
            });
            writeln!(buf, "{line}")
        }),
        cli::LogFormat::Text => logger.format(|buf, record| {
            let now = format_micros(SystemTime::now());
            let mut line = format!(
                "[{}Z {:<5} {}] {}",
                &now[..19],
                record.level(),
                record.target(),
                record.args()
            );
            for (k, v) in fields(record) {
                line.push_str(&format!(" {k}={}", v.as_str().unwrap_or_default()));
            }
            writeln!(buf, "{line}")
        }),
    };
    logger.init();
    std::process::exit(run(*args));
}

/// `snapshot-schedule`: its own flags and help; logs as text to stderr.
fn snapshot_schedule(args: Vec<String>) -> i32 {
    let sa_namespace = || {
        std::fs::read_to_string(std::path::Path::new(kube::SERVICE_ACCOUNT_DIR).join("namespace"))
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    };
    match schedule::parse(args, |k| std::env::var(k).ok(), sa_namespace) {
        Ok(schedule::Command::Help) => {
            print!("{}", schedule::USAGE.help());
            schedule::EXIT_OK
        }
        Ok(schedule::Command::Run(a)) => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .init();
            schedule::run(&a)
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", schedule::USAGE.help());
            schedule::EXIT_USAGE
        }
    }
}

/// `takeover`: its own flags and help; findings on stdout, warnings of
/// the clients on stderr.
fn takeover(args: Vec<String>) -> i32 {
    match takeover::parse(args, |k| std::env::var(k).ok()) {
        Ok(takeover::Command::Help) => {
            print!("{}", takeover::USAGE.help());
            takeover::EXIT_READY
        }
        Ok(takeover::Command::Run(a)) => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
                .init();
            takeover::run(&a)
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", takeover::USAGE.help());
            takeover::EXIT_USAGE
        }
    }
}

/// A record's key-value pairs as a JSON object of strings.
fn fields(record: &log::Record<'_>) -> serde_json::Map<String, serde_json::Value> {
    struct Collect(serde_json::Map<String, serde_json::Value>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            self.0.insert(key.to_string(), value.to_string().into());
            Ok(())
        }
    }
    let mut collect = Collect(serde_json::Map::new());
    let _ = record.key_values().visit(&mut collect);
    collect.0
}
