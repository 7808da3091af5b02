//! Benchmarks.

#[derive(clap::Subcommand, Debug)]
pub(crate) enum BenchCmd {
    /// Small-message RTT and throughput: raw UDP, raw QUIC, Volley direct, Volley relayed.
    Transport,
}

pub(crate) async fn run(_which: BenchCmd) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
