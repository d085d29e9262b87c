use rds_csi_controller::{cli, run, EXIT_OK, EXIT_USAGE};

fn main() {
    let parsed = cli::parse(std::env::args().skip(1), |k| std::env::var(k).ok());
    let args = match parsed {
        Ok(cli::Command::Run(a)) => a,
        Ok(cli::Command::Help) => {
            print!("{}", cli::USAGE);
            std::process::exit(EXIT_OK);
        }
        Ok(cli::Command::Version) => {
            println!("rds-csi-controller {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(EXIT_OK);
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", cli::USAGE);
            std::process::exit(EXIT_USAGE);
        }
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = &args.log_level {
        logger.parse_filters(level);
    }
    logger.init();
    std::process::exit(run(*args));
}
