//! A connection to Redis: one server (a reconnecting connection manager) or a Redis Cluster
//! (each command routed to the node holding its key's slot), made on first use and then
//! shared. The stores that keep state in Redis (rate limits, revocations) talk through it.

use std::time::Duration;

// One value per store for the life of the process: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Deployment {
    Single {
        client: redis::Client,
        connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
    },
}

/// Where a store's Redis is, and its connection once made.
pub struct RedisBackend {
    deployment: Deployment,
    timeout: Duration,
    retries: usize,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("cluster", &self.is_cluster())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// One server at `url`; connecting and each answer are bounded by `timeout`, and a
    /// failed command is retried `retries` times on a new connection.
    pub fn single(url: &str, timeout: Duration, retries: usize) -> redis::RedisResult<Self> {
        Ok(RedisBackend {
            deployment: Deployment::Single {
                client: redis::Client::open(url)?,
                connection: tokio::sync::OnceCell::new(),
            },
            timeout,
            retries,
        })
    }

    /// A Redis Cluster reached through any of `nodes` (its topology is read from them).
    pub fn cluster(
        nodes: &[String],
        timeout: Duration,
        retries: usize,
    ) -> redis::RedisResult<Self> {
        let client = redis::cluster::ClusterClient::builder(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(u32::try_from(retries.max(1)).unwrap_or(1))
            .build()?;
        Ok(RedisBackend {
            deployment: Deployment::Cluster {
                client,
                connection: tokio::sync::OnceCell::new(),
            },
            timeout,
            retries,
        })
    }

    /// Whether this is a Redis Cluster (keys of one command must then share a slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.deployment, Deployment::Cluster { .. })
    }

    /// The shared connection, made on first use.
    pub async fn connection(&self) -> redis::RedisResult<RedisConnection> {
        match &self.deployment {
            Deployment::Single { client, connection } => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(self.retries);
                let manager = connection
                    .get_or_try_init(|| {
                        redis::aio::ConnectionManager::new_with_config(client.clone(), config)
                    })
                    .await?;
                Ok(RedisConnection::Single(manager.clone()))
            }
            Deployment::Cluster { client, connection } => {
                let cluster = connection
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                Ok(RedisConnection::Cluster(cluster.clone()))
            }
        }
    }
}

/// A connection to one Redis server or to a Cluster, usable wherever redis-rs takes a
/// connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(redis::aio::ConnectionManager),
    /// A Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}
