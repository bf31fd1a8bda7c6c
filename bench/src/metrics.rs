//! Reading the server's plain HTTP endpoints (`/metrics`, snapshots).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetches `/metrics` and returns every sample line as (name with labels, value).
///
/// # Errors
/// The request failed.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Vec<(String, f64)>> {
    let body = get(addr, "/metrics").await?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        })
        .collect())
}

/// `GET path` (the server closes the connection after a plain request):
/// the body of a 200 response.
///
/// # Errors
/// The request failed or the status is not 200.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.contains(" 200 "), "GET {path}: {status}");
    Ok(body.to_owned())
}

/// The values of a metric with a `shard` label, in shard order.
pub fn per_shard(samples: &[(String, f64)], name: &str) -> Vec<f64> {
    let prefix = format!("{name}{{shard=\"");
    let mut rows: Vec<(usize, f64)> = samples
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix(&prefix)?
                    .trim_end_matches("\"}")
                    .parse()
                    .ok()?,
                *v,
            ))
        })
        .collect();
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, v)| v).collect()
}
