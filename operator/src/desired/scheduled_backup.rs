//! The `Backup` a [`ScheduledBackup`] creates at a scheduled time: the schedule's settings,
//! named from that time, labelled with the schedule and annotated with the time.
//!
//! The Backup has no owner reference: deleting a schedule keeps the Backups it took (the
//! only record of where their data is), as deleting a Backup keeps its data.

use crate::crd::ScheduledBackup;
use crate::crd::backup::{Backup, BackupSpec};
use crate::crd::scheduled_backup::{SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION};
use crate::error::{Error, Result};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

/// The Backup named `name` that `schedule` takes at `scheduled`.
pub fn scheduled_backup(
    schedule: &ScheduledBackup,
    name: &str,
    scheduled: Timestamp,
) -> Result<Backup> {
    let schedule_name = schedule
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let spec = &schedule.spec;
    let mut backup = Backup::new(
        name,
        BackupSpec {
            cluster_ref: spec.cluster_ref.clone(),
            database: spec.database.clone(),
            target: spec.target.clone(),
            max_rate_mib_per_second: spec.max_rate_mib_per_second,
        },
    );
    backup.metadata.namespace = schedule.metadata.namespace.clone();
    backup.metadata.labels = Some(BTreeMap::from([
        (SCHEDULE_LABEL.to_owned(), schedule_name),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "flotilla-operator".to_owned(),
        ),
    ]));
    backup.metadata.annotations = Some(BTreeMap::from([(
        SCHEDULED_AT_ANNOTATION.to_owned(),
        scheduled.to_string(),
    )]));
    Ok(backup)
}
