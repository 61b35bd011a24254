//! Scenario 8, memory: the control plane's resident memory holding every
//! route, idle and with every watching stream open (read during the fan-out
//! scenario), and the `signpost-edge` binary's resident memory once it holds
//! every route. etcd's resident memory is read at the same moments for scale.

/// The figures, gathered by the routing run.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Routes in the table.
    pub routes: usize,
    /// Watching streams open at the peak.
    pub streams: usize,
    /// Control plane RSS with the table, no stream open.
    pub control_plane_idle: u64,
    /// Control plane RSS with the table and every stream open.
    pub control_plane_streams: u64,
    /// Control plane RSS with the table, no stream open, 10 s (1 s with `--quick`) after
    /// a restart on the same data (context: the figures above follow a first start).
    pub control_plane_restarted: u64,
    /// Control plane RSS with every stream open after a first start on as many
    /// organizations that each also hold the setup link their connection was configured
    /// through (0 when not measured).
    pub control_plane_streams_with_links: u64,
    /// The same organizations after a restart, no stream open, as
    /// `control_plane_restarted` (0 when not measured).
    pub control_plane_restarted_with_links: u64,
    /// Edge binary RSS holding the table.
    pub edge: u64,
    /// etcd RSS with the table's keys, no watcher.
    pub etcd_idle: u64,
    /// etcd RSS with the keys and every watcher open.
    pub etcd_watchers: u64,
}

impl Memory {
    /// A JSON object for reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "routes": self.routes, "streams": self.streams,
            "control_plane_idle_bytes": self.control_plane_idle,
            "control_plane_streams_bytes": self.control_plane_streams,
            "control_plane_restarted_bytes": self.control_plane_restarted,
            "control_plane_streams_with_links_bytes": self.control_plane_streams_with_links,
            "control_plane_restarted_with_links_bytes": self.control_plane_restarted_with_links,
            "edge_bytes": self.edge,
            "etcd_idle_bytes": self.etcd_idle,
            "etcd_watchers_bytes": self.etcd_watchers,
        })
    }
}
