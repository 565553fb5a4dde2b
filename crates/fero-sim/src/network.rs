//! The fault layer between each device and the server: [`SimRemote`], a
//! [`fero_protocol::Remote`] that delays, loses, duplicates and refuses calls as the seed
//! decides, and the network state all of a simulation's remotes share (partitions, server
//! restarts, the fault profile).
//!
//! A call goes: the device is partitioned or the server down → fails at once; otherwise it
//! travels (a delay), may be lost on the way (a timeout, nothing applied) or refused (503);
//! the server applies it (twice for a duplicate delivery, the second answer must equal the
//! first); the answer travels back (a delay) and may be lost — after the server applied it — or
//! cut by a server restart or a partition that began meanwhile.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fero::{RandomSource, SeededRandom, Version};
use fero_protocol::{
    ChangeOutcome, DigestResponse, PullRequest, PullResponse, PushRequest, PushResponse, Remote,
    RemoteError, RemoteErrorKind,
};

use crate::server::{SimServer, lock, tag_of};
use crate::store::SimStore;

/// How often each fault happens while faults are on, and how long calls take.
///
/// Probabilities are per call, in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FaultProfile {
    /// The request is lost: the call times out, nothing was applied.
    pub lost_request: f64,
    /// The response is lost after the server applied the call.
    pub lost_response: f64,
    /// The request is delivered twice (the second delivery is a replay).
    pub duplicate: f64,
    /// The server answers 503 (nothing applied).
    pub unavailable: f64,
    /// A call is slow: it takes [`slow_delay`](Self::slow_delay) each way.
    pub slow: f64,
    /// The longest ordinary one-way delay (drawn uniformly from 1 ms up to it).
    pub max_delay: Duration,
    /// A slow call's one-way delay.
    pub slow_delay: Duration,
    /// How long a lost request takes to time out.
    pub timeout: Duration,
    /// Faults hit pushes only; pulls only get delays (for scripted scenarios).
    pub pushes_only: bool,
}

impl FaultProfile {
    /// No faults: only ordinary delays.
    pub fn none() -> Self {
        FaultProfile {
            lost_request: 0.0,
            lost_response: 0.0,
            duplicate: 0.0,
            unavailable: 0.0,
            slow: 0.0,
            max_delay: Duration::from_millis(30),
            slow_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            pushes_only: false,
        }
    }

    /// A profile drawn from `random`: each fault between 2 % and 12 % per call.
    pub fn random(random: &mut dyn RandomSource) -> Self {
        let mut chance = || 0.02 + 0.10 * unit(random.next_u64());
        FaultProfile {
            lost_request: chance(),
            lost_response: chance(),
            duplicate: chance(),
            unavailable: chance(),
            slow: chance() / 2.0,
            ..FaultProfile::none()
        }
    }
}

/// A uniform draw in `0.0..1.0` from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A write a device was told the server accepted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ack {
    pub(crate) device: usize,
    pub(crate) collection: String,
    pub(crate) id: String,
    pub(crate) version: Version,
    pub(crate) deleted: bool,
    pub(crate) tag: Option<String>,
}

/// Counts of what the network did, for the report.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Calls made.
    pub calls: u64,
    /// Requests lost.
    pub lost_requests: u64,
    /// Responses lost after the server applied the call.
    pub lost_responses: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Calls refused because the device was partitioned.
    pub partitioned: u64,
    /// Calls cut by a server restart.
    pub cut_by_restart: u64,
}

/// The network and server-process state every [`SimRemote`] of a simulation shares.
pub(crate) struct Network {
    pub(crate) faults_on: bool,
    pub(crate) profile: FaultProfile,
    partitioned: BTreeSet<usize>,
    server_epoch: u64,
    server_down_until: Option<tokio::time::Instant>,
    random: SeededRandom,
    /// What happened, for the step trace.
    pub(crate) log: Vec<String>,
    pub(crate) acks: Vec<Ack>,
    /// Duplicate deliveries answered differently (an idempotency failure of the server).
    pub(crate) replay_mismatches: Vec<String>,
    pub(crate) counts: FaultCounts,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("faults_on", &self.faults_on)
            .field("partitioned", &self.partitioned)
            .field("server_epoch", &self.server_epoch)
            .finish_non_exhaustive()
    }
}

impl Network {
    pub(crate) fn new(seed: u64, faults_on: bool, profile: FaultProfile) -> Self {
        Network {
            faults_on,
            profile,
            partitioned: BTreeSet::new(),
            server_epoch: 0,
            server_down_until: None,
            random: SeededRandom::new(seed),
            log: Vec::new(),
            acks: Vec::new(),
            replay_mismatches: Vec::new(),
            counts: FaultCounts::default(),
        }
    }

    pub(crate) fn partition(&mut self, device: usize) {
        self.partitioned.insert(device);
    }

    pub(crate) fn repair(&mut self, device: usize) {
        self.partitioned.remove(&device);
    }

    pub(crate) fn repair_all(&mut self) {
        self.partitioned.clear();
    }

    pub(crate) fn is_partitioned(&self, device: usize) -> bool {
        self.partitioned.contains(&device)
    }

    /// Restarts the server process: calls in flight fail, and it refuses calls for `down`.
    pub(crate) fn restart_server(&mut self, down: Duration) {
        self.server_epoch += 1;
        self.server_down_until = Some(tokio::time::Instant::now() + down);
    }

    pub(crate) fn server_up(&mut self) {
        self.server_down_until = None;
    }

    fn server_down(&self) -> bool {
        self.server_down_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && unit(self.random.next_u64()) < probability
    }

    fn delay(&mut self) -> Duration {
        let max = u64::try_from(self.profile.max_delay.as_micros())
            .unwrap_or(u64::MAX)
            .max(1_000);
        let ordinary = Duration::from_micros(1_000 + self.random.next_u64() % max);
        if self.faults_on && self.chance(self.profile.slow) {
            self.profile.slow_delay
        } else {
            ordinary
        }
    }

    fn plan(&mut self, device: usize, push: bool) -> Result<Plan, Refusal> {
        self.counts.calls += 1;
        if self.partitioned.contains(&device) {
            self.counts.partitioned += 1;
            return Err(Refusal::Partitioned);
        }
        if self.server_down() {
            self.counts.unavailable += 1;
            return Err(Refusal::Restarting);
        }
        let there = self.delay();
        let back = self.delay();
        let fault = if !self.faults_on || (self.profile.pushes_only && !push) {
            None
        } else if self.chance(self.profile.lost_request) {
            Some(Fault::LostRequest)
        } else if self.chance(self.profile.unavailable) {
            Some(Fault::Unavailable)
        } else if self.chance(self.profile.duplicate) {
            Some(Fault::Duplicate)
        } else if self.chance(self.profile.lost_response) {
            Some(Fault::LostResponse)
        } else {
            None
        };
        Ok(Plan {
            there,
            back,
            fault,
            epoch: self.server_epoch,
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Fault {
    LostRequest,
    Unavailable,
    Duplicate,
    LostResponse,
}

#[derive(Copy, Clone, Debug)]
struct Plan {
    there: Duration,
    back: Duration,
    fault: Option<Fault>,
    epoch: u64,
}

#[derive(Copy, Clone, Debug)]
enum Refusal {
    Partitioned,
    Restarting,
}

/// A device's connection to the simulated server through the fault layer. Cloning shares it.
///
/// It implements [`fero_protocol::Remote`], so any handler written against that trait (such as
/// `fero-sqlite`'s) can run against the simulation. Its delays are tokio sleeps: use it inside
/// the simulation (or any runtime with time enabled).
#[derive(Clone)]
pub struct SimRemote {
    device: usize,
    server: SimServer,
    network: Arc<Mutex<Network>>,
    /// The device incarnation this connection belongs to: once it crashed, the connection is
    /// dead (a task the crash did not stop can no longer reach the server).
    owner: Option<SimStore>,
}

impl fmt::Debug for SimRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRemote")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl SimRemote {
    pub(crate) fn new(device: usize, server: SimServer, network: Arc<Mutex<Network>>) -> Self {
        SimRemote {
            device,
            server,
            network,
            owner: None,
        }
    }

    /// The same connection, dead once `owner`'s device incarnation crashed.
    pub(crate) fn owned_by(&self, owner: &SimStore) -> SimRemote {
        SimRemote {
            owner: Some(owner.clone()),
            ..self.clone()
        }
    }

    fn dead(&self, collection: &str, what: &str) -> Option<RemoteError> {
        let owner = self.owner.as_ref()?;
        (!owner.is_current()).then(|| {
            RemoteError::new(
                RemoteErrorKind::Permanent,
                collection,
                format!(
                    "{what}: device {} crashed; this connection belonged to its earlier process",
                    self.device
                ),
            )
        })
    }

    /// The device this connection belongs to.
    pub fn device(&self) -> usize {
        self.device
    }

    fn transient(collection: &str, message: String) -> RemoteError {
        RemoteError::new(RemoteErrorKind::Transient, collection, message)
    }

    /// One call through the fault layer; `call` runs on the server (twice for a duplicate).
    async fn exchange<T: PartialEq + fmt::Debug>(
        &self,
        what: &str,
        push: bool,
        collection: &str,
        call: impl Fn(&SimServer) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let d = self.device;
        if let Some(dead) = self.dead(collection, what) {
            return Err(dead);
        }
        let plan = lock(&self.network).plan(d, push);
        let plan = match plan {
            Ok(plan) => plan,
            Err(Refusal::Partitioned) => {
                return Err(Self::transient(
                    collection,
                    format!("device {d} is partitioned: network unreachable"),
                ));
            }
            Err(Refusal::Restarting) => {
                let mut error = Self::transient(
                    collection,
                    "503: the server is restarting, retry later".into(),
                );
                error.retry_after = Some(Duration::from_millis(500));
                return Err(error);
            }
        };
        tokio::time::sleep(plan.there).await;
        match plan.fault {
            Some(Fault::LostRequest) => {
                let timeout = {
                    let mut network = lock(&self.network);
                    network.counts.lost_requests += 1;
                    network.log.push(format!("  net d{d} {what}: request lost"));
                    network.profile.timeout
                };
                tokio::time::sleep(timeout).await;
                return Err(Self::transient(
                    collection,
                    format!("{what} timed out: the request was lost"),
                ));
            }
            Some(Fault::Unavailable) => {
                {
                    let mut network = lock(&self.network);
                    network.counts.unavailable += 1;
                    network.log.push(format!("  net d{d} {what}: 503"));
                }
                return Err(Self::transient(
                    collection,
                    "503: the server is overloaded, retry later".into(),
                ));
            }
            Some(Fault::Duplicate) | Some(Fault::LostResponse) | None => {}
        }
        self.check_path(what, collection, plan.epoch)?;
        let mut answer = call(&self.server)?;
        if plan.fault == Some(Fault::Duplicate) {
            let second = call(&self.server)?;
            let mut network = lock(&self.network);
            network.counts.duplicates += 1;
            network
                .log
                .push(format!("  net d{d} {what}: delivered twice"));
            if second != answer {
                network.replay_mismatches.push(format!(
                    "device {d} {what}: first answer {answer:?}, second {second:?}"
                ));
            }
            answer = second;
        }
        tokio::time::sleep(plan.back).await;
        if plan.fault == Some(Fault::LostResponse) {
            let mut network = lock(&self.network);
            network.counts.lost_responses += 1;
            network.log.push(format!(
                "  net d{d} {what}: response lost after the server applied it"
            ));
            return Err(Self::transient(
                collection,
                format!("{what}: connection reset before the response arrived"),
            ));
        }
        self.check_path(what, collection, plan.epoch)?;
        Ok(answer)
    }

    /// Fails the call if the server restarted or the device was partitioned since it began.
    fn check_path(&self, what: &str, collection: &str, epoch: u64) -> Result<(), RemoteError> {
        let d = self.device;
        if let Some(dead) = self.dead(collection, what) {
            return Err(dead);
        }
        let mut network = lock(&self.network);
        if network.server_epoch != epoch || network.server_down() {
            network.counts.cut_by_restart += 1;
            network
                .log
                .push(format!("  net d{d} {what}: cut by a server restart"));
            return Err(Self::transient(
                collection,
                format!("{what}: connection reset, the server restarted"),
            ));
        }
        if network.is_partitioned(d) {
            network.counts.partitioned += 1;
            network
                .log
                .push(format!("  net d{d} {what}: cut by a partition"));
            return Err(Self::transient(
                collection,
                format!("{what}: device {d} lost the network"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Remote for SimRemote {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        let after = request.checkpoint.as_ref().map_or(0, |c| c.last_sync_id.0);
        self.exchange(&format!("pull>{after}"), false, collection, |server| {
            server.pull_now(collection, request)
        })
        .await
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        let what = format!("push[{}]", request.changes.len());
        let response = self
            .exchange(&what, true, collection, |server| {
                server.push_now(collection, request)
            })
            .await?;
        let mut network = lock(&self.network);
        for (change, result) in request.changes.iter().zip(&response.results) {
            if let ChangeOutcome::Accepted { version, .. } = result.outcome {
                network.acks.push(Ack {
                    device: self.device,
                    collection: collection.to_owned(),
                    id: change.id.clone(),
                    version,
                    deleted: change.deleted,
                    tag: tag_of(&change.data).map(str::to_owned),
                });
            }
        }
        Ok(response)
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.exchange("digest", false, collection, |server| {
            Ok(server.digest_now(collection))
        })
        .await
    }
}
