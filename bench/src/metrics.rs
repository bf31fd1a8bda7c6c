//! Reading the server's `/metrics`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetches `/metrics` and returns every sample line as (name with labels, value).
///
/// # Errors
/// The request failed.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Vec<(String, f64)>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        })
        .collect())
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
