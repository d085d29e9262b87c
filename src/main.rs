use std::{io::Write as _, time::SystemTime};

use rds_csi_controller::{
    attachment::format_micros, cli, flags, kube, orphans, run, schedule, takeover, EXIT_OK,
    EXIT_USAGE,
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
        Ok(cli::Command::Orphans(rest)) => std::process::exit(subcommand(
            orphans::parse(rest, |k| std::env::var(k).ok()),
            &orphans::USAGE,
            "warn",
            orphans::run,
        )),
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
    init_logger("info", args.log_level.as_deref(), args.log_format);
    std::process::exit(run(*args));
}

/// `snapshot-schedule`: its own flags and help; logs as text to stderr.
fn snapshot_schedule(args: Vec<String>) -> i32 {
    let parsed = schedule::parse(
        args,
        |k| std::env::var(k).ok(),
        kube::service_account_namespace,
    );
    subcommand(parsed, &schedule::USAGE, "info", schedule::run)
}

/// `takeover`: its own flags and help; findings on stdout, warnings of
/// the clients on stderr.
fn takeover(args: Vec<String>) -> i32 {
    let parsed = takeover::parse(args, |k| std::env::var(k).ok());
    subcommand(parsed, &takeover::USAGE, "warn", takeover::run)
}

/// A subcommand's command line, as every one answers it: its help (exit
/// 0), a bad flag with the help (exit 2), or a run with text logs to
/// stderr at `log_level` unless `RUST_LOG` says otherwise.
fn subcommand<A>(
    parsed: Result<flags::Parsed<A>, String>,
    usage: &flags::Usage,
    log_level: &str,
    run: impl FnOnce(&A) -> i32,
) -> i32 {
    match parsed {
        Ok(flags::Parsed::Help) => {
            print!("{}", usage.help());
            EXIT_OK
        }
        Ok(flags::Parsed::Run(a)) => {
            init_logger(log_level, None, cli::LogFormat::Text);
            run(&a)
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", usage.help());
            EXIT_USAGE
        }
    }
}

/// The logger of every command: `RUST_LOG`, else `default_level`, unless
/// `level` says otherwise; lines formatted here, with the time crate the
/// controller uses anyway, so that env_logger's own timestamps (another
/// date library) and colours stay out of the binary.
fn init_logger(default_level: &str, level: Option<&str>, format: cli::LogFormat) {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if let Some(level) = level {
        logger.parse_filters(level);
    }
    match format {
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
            write!(
                buf,
                "[{}Z {:<5} {}] {}",
                &now[..19],
                record.level(),
                record.target(),
                record.args()
            )?;
            // The fields in the order the call site gives them.
            struct Line<'b>(&'b mut env_logger::fmt::Formatter);
            impl<'kvs> log::kv::VisitSource<'kvs> for Line<'_> {
                fn visit_pair(
                    &mut self,
                    key: log::kv::Key<'kvs>,
                    value: log::kv::Value<'kvs>,
                ) -> Result<(), log::kv::Error> {
                    write!(self.0, " {key}={value}").map_err(log::kv::Error::boxed)
                }
            }
            let _ = record.key_values().visit(&mut Line(buf));
            writeln!(buf)
        }),
    };
    logger.init();
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
