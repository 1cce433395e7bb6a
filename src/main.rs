use clap::Parser;
use std::process::ExitCode;
use tgb_reconciler::entry::cli::{Cli, EXIT_USAGE, run};

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    tgb_reconciler::entry::logging::init(in_lambda);
    if in_lambda {
        // Both faces are boxed: their futures are deep enough to pass the compiler's query depth
        // limit when laid out inline in `main`.
        return match Box::pin(tgb_reconciler::entry::lambda::serve()).await {
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
