//! `hub-origin`: serves folders as Hugging Face Hub repositories on loopback, for tests and
//! benchmarks (see `commons_simulations::hub_origin`).
//!
//! ```text
//! hub-origin --repo model:acme/tiny=./folder --repo dataset:acme/data=./dir \
//!     [--listen 127.0.0.1:0] [--token acme/tiny=SECRET] [--page-size N] [--rate BYTES_PER_SEC]
//! ```
//!
//! Publishes each folder on branch `main`, prints one JSON line
//! `{"url": "http://127.0.0.1:PORT", "repos": {"acme/tiny": "<commit>", ...}}`, then serves
//! until SIGTERM or SIGINT.

use std::{io::Write as _, net::SocketAddr, path::PathBuf};

use anyhow::{anyhow, Context};
use clap::Parser;
use commons_simulations::hub_origin::HubOrigin;

/// Serves folders as Hugging Face Hub repositories.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A repository to publish on branch main: `model:org/name=FOLDER` or
    /// `dataset:org/name=FOLDER` (repeatable)
    #[arg(long = "repo", required = true)]
    repos: Vec<String>,
    /// Gate a repository behind a bearer token: `org/name=TOKEN` (repeatable)
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Entries per page of tree listings
    #[arg(long)]
    page_size: Option<usize>,
    /// Cap on file-body sending, in bytes per second (0 = unlimited)
    #[arg(long)]
    rate: Option<u64>,
}

/// `kind:org/name=folder`.
fn parse_repo(spec: &str) -> anyhow::Result<(String, String, PathBuf)> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| anyhow!("--repo {spec:?}: expected KIND:ORG/NAME=FOLDER"))?;
    let (repo, folder) = rest
        .split_once('=')
        .ok_or_else(|| anyhow!("--repo {spec:?}: expected KIND:ORG/NAME=FOLDER"))?;
    Ok((kind.to_string(), repo.to_string(), PathBuf::from(folder)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let origin = HubOrigin::start_on(args.listen).await?;
    if let Some(n) = args.page_size {
        origin.set_page_size(n);
    }
    if let Some(rate) = args.rate {
        origin.set_rate(rate);
    }
    for spec in &args.tokens {
        let (repo, token) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--token {spec:?}: expected ORG/NAME=TOKEN"))?;
        origin.require_token(repo, token);
    }
    let mut repos = serde_json::Map::new();
    for spec in &args.repos {
        let (kind, repo, folder) = parse_repo(spec)?;
        let sha = origin
            .publish(&kind, &repo, &folder, "main")
            .await
            .with_context(|| format!("--repo {spec}"))?;
        repos.insert(repo, sha.into());
    }
    let line = serde_json::json!({ "url": origin.url(), "repos": repos });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    origin.stop();
    Ok(())
}
