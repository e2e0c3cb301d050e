//! What confirms that members changed roles or restarted: the new leader
//! takes writes, a restarted or reinitialised member runs anew and shows so
//! in the DCS.

use super::*;

/// The new leader accepts writes: its `/primary` health check says 200.
pub(super) fn confirm_writable(conn: &Conn<'_>, name: &str) -> Result<()> {
    let client = conn.member_client(name)?;
    wait_until(
        &format!("{name} to accept writes"),
        conn.target.timeout,
        || match client.health("/primary") {
            Ok(200) => Probe::Ready(()),
            Ok(s) => Probe::Waiting(format!("/primary answers {s}")),
            Err(e) => Probe::Waiting(e.to_string()),
        },
        String::new,
    )
}

/// Restarts a member through its Patroni and waits until it runs anew, as
/// its REST API and then the DCS say.
pub(super) fn restart_member(conn: &Conn<'_>, name: &str) -> Result<()> {
    let attempt = || {
        let client = conn.member_client(name)?;
        let own = client.patroni()?;
        let (before, was_pending) = (own.postmaster_start_time, own.pending_restart);
        conn.operation_client(name)?.restart()?;
        wait_member_healthy(conn, &client, name, |s| s.postmaster_start_time != before)?;
        // The member's key in the DCS, which /cluster shows, follows on
        // Patroni's next loop: confirm there too, so that what the task
        // returns is what the cluster says.
        conn.wait_cluster(
            &format!("{name} to show as running after its restart"),
            |s| {
                s.member(name).is_some_and(|m| {
                    matches!(m.state.as_str(), "running" | "streaming")
                        && !(was_pending && m.pending_restart)
                })
            },
        )
        .map(|_| ())
    };
    attempt().map_err(|e| Error::Other(format!("restart of {name}: {e}")))
}

/// Rounds of `restart: pending`: a member whose pending restart Patroni
/// published only after the first round was observed is restarted in a
/// second one.
pub(super) const RESTART_ROUNDS: usize = 2;

/// Copies a replica's data again from the leader and waits until it runs
/// anew.
pub(super) fn reinit_member(conn: &Conn<'_>, name: &str) -> Result<()> {
    let attempt = || {
        let client = conn.member_client(name)?;
        let before = client.patroni()?.postmaster_start_time;
        conn.operation_client(name)?.reinitialize()?;
        wait_member_healthy(conn, &client, name, |s| s.postmaster_start_time != before)
    };
    attempt().map_err(|e| Error::Other(format!("reinit of {name}: {e}")))
}
