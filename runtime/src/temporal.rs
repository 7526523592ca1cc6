//! Connecting to the Temporal server: shared by the API, the worker and the node agent.

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};

/// Connects to `address` (`host:port` or a URL) in `namespace`, retrying for up to `patience`
/// while the server starts.
pub async fn connect(
    address: &str,
    namespace: &str,
    identity: &str,
    patience: std::time::Duration,
) -> anyhow::Result<Client> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let url = url::Url::parse(&url)?;
    let deadline = std::time::Instant::now() + patience;
    loop {
        let options = ConnectionOptions::new(url.clone())
            .identity(identity.to_string())
            .build();
        match Connection::connect(options).await {
            Ok(connection) => {
                return Ok(Client::new(
                    connection,
                    ClientOptions::new(namespace).build(),
                )?);
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(%address, error = %e, "Temporal not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("cannot reach Temporal at {address}: {e}")),
        }
    }
}
