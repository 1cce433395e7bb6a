use clap::Parser;
use std::process::ExitCode;
use tgb_reconciler::cli::{Cli, EXIT_USAGE, run};

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    init_logging(in_lambda);
    if in_lambda {
        // Both faces are boxed: their futures are deep enough to pass the compiler's query depth
        // limit when laid out inline in `main`.
        return match Box::pin(tgb_reconciler::lambda::serve()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{}", error.chain());
                ExitCode::FAILURE
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    ExitCode::from(Box::pin(run(cli, &mut std::io::stdout().lock())).await)
}

/// Logs go to stderr (stdout carries the plan); JSON under Lambda, text on a terminal.
fn init_logging(json: bool) {
    // On a terminal the plan on stdout is the report; logs add only warnings unless asked.
    let default = if json {
        "warn,tgb_reconciler=info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().without_time().init();
    } else {
        builder.init();
    }
}
