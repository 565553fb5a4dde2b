//! `fero-demo`: runs the whole sync story (see the `fero_demo` crate docs) and exits 0 when both
//! devices converged with the server and the shared-data guarantees held, 1 when they did not, 2
//! when the story could not run.

use std::process::ExitCode;

use clap::Parser;
use fero_demo::{Mode, Options, Output};

fn main() -> ExitCode {
    let options = Options::parse();
    let output = Output::new(if options.json {
        Mode::Quiet
    } else {
        Mode::detect()
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fero-demo: cannot start the tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let interrupted = async {
            // Without a Ctrl-C handler the default (terminate) applies; never stop the story
            // because the handler could not be installed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = fero_demo::run(&options, &output) => Some(result),
            () = interrupted => None,
        }
    });
    match outcome {
        // Dropping the story removed its temporary folder.
        None => {
            eprintln!("fero-demo: interrupted; temporary files removed");
            ExitCode::from(130)
        }
        Some(Err(error)) => {
            eprintln!("fero-demo: {:#}", anyhow::Error::from(error));
            ExitCode::from(2)
        }
        Some(Ok(summary)) => {
            if options.json {
                match serde_json::to_string_pretty(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("fero-demo: cannot write the JSON summary: {error}");
                        return ExitCode::from(2);
                    }
                }
            }
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
