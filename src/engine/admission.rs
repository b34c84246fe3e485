//! Admission of one claimed file: its recorded outcome or a new decision (parse, identity,
//! authorization, checks), recorded and audited, then the file moved with its receipt.

use super::*;

impl Engine {
    /// Decide one claimed file: record its outcome, then move it.
    pub(super) fn decide_file(
        &mut self,
        file: ClaimedFile,
        pending: &mut HashMap<u32, usize>,
    ) -> Result<(), DbError> {
        self.ensure_connected()?;
        let record = self.record_of(file.clone(), pending)?;
        if record.backfill_id.is_some() {
            failpoint::hang_if_armed(failpoint::AFTER_ACCEPT);
        }
        let to = if record.outcome.is_accepted() {
            Disposition::Accepted
        } else {
            Disposition::Rejected
        };
        // The receipt is what `backfillctl` is answered: the control protocol's view of the record.
        let receipt = serde_json::to_value(crate::control::RequestView::from(record.clone()))
            .map_err(|e| DbError::Data(e.to_string()))?;
        self.spool
            .finish(&file.claim_name, to, &receipt)
            .map_err(|e| DbError::Data(e.to_string()))?;
        if let Some(id) = record.backfill_id {
            if self.leader_token.is_some() {
                self.carry_out_id(&id);
            }
            self.reconcile_id(&id);
        }
        Ok(())
    }

    /// The outcome of a claimed file: the one recorded under its key, or a new decision
    /// (recorded, and audited). `pending` counts the new files of each uid in this pass.
    pub(super) fn record_of(
        &mut self,
        mut file: ClaimedFile,
        pending: &mut HashMap<u32, usize>,
    ) -> Result<RequestRecord, DbError> {
        let recorded = {
            let c = self.conn.get()?;
            Store::new(&mut c.db).request(&file.key)?
        };
        let record = match recorded {
            Some(r) => r,
            None => {
                let owner = match &file.content {
                    Ok(c) => Some(c.uid),
                    Err((uid, _)) => *uid,
                };
                if let Some(uid) = owner {
                    let n = pending.entry(uid).or_insert(0);
                    *n += 1;
                    let max = self.config.limits.max_pending_per_user;
                    if *n > max {
                        file.content = Err((
                            Some(uid),
                            Rejection::new(
                                ReasonCode::TooManyPending,
                                format!("refused: uid {uid} has more than {max} requests waiting, [limits] max_pending_per_user = {max}; resubmit once they are decided"),
                            ),
                        ));
                    }
                }
                let record = self.evaluate(&file)?;
                if let Some(id) = &record.backfill_id {
                    tracing::info!(request = %file.file_name, uid = record.uid, user = ?record.username, backfill = %id, "request accepted");
                } else {
                    tracing::info!(request = %file.file_name, uid = record.uid, user = ?record.username, code = ?record.reason_code, reason = ?record.reason, "request rejected");
                }
                record
            }
        };
        Ok(record)
    }

    /// Validate a new file and record the outcome (accepting creates the backfill atomically).
    pub(super) fn evaluate(&mut self, file: &ClaimedFile) -> Result<RequestRecord, DbError> {
        let verdict = match &file.content {
            Err((uid, rejection)) => Verdict {
                ident: Identity {
                    uid: *uid,
                    unix_user: uid.and_then(spool::user_name),
                    ..Identity::default()
                },
                action: Action::Create,
                target: None,
                result: Ruling::Refuse(rejection.clone()),
            },
            Ok(content) => self.validate(content.uid, &content.bytes)?,
        };
        let Verdict {
            ident,
            action,
            target,
            result: verdict,
        } = verdict;
        let target = target.unwrap_or_else(|| format!("file:{}", file.file_name));
        self.audit(&ident, action, Some(&target), verdict.refusal())?;
        let uid = ident.uid;
        let username = ident.unix_user.clone();
        let mut record = RequestRecord {
            request_key: file.key.clone(),
            file_name: file.file_name.clone(),
            uid: uid.unwrap_or(u32::MAX),
            username: username.clone(),
            host: self.host.clone(),
            received_at: store::stored_ts(Utc::now()),
            outcome: Outcome::Rejected,
            backfill_id: None,
            reason_code: None,
            reason: None,
            airflow_user: ident.airflow_user.clone(),
            on_behalf_of: ident.on_behalf_of.clone(),
            action: Some(action.as_str().to_owned()),
            dry_run: false,
            dates: None,
            skipped_dates: None,
            warnings: None,
            estimate: None,
        };
        let c = self.conn.get()?;
        match verdict {
            Ruling::Refuse(rejection) => {
                record.reason_code = Some(rejection.code);
                record.reason = Some(rejection.message);
                Store::new(&mut c.db).record_request(&record)?;
            }
            Ruling::Admit(Accepted::DryRun(new)) => {
                record.outcome = Outcome::Accepted;
                record.dry_run = true;
                // In the order they would run (newest first for `run_backwards`).
                let in_order = new.options.run_order.arrange(&new.logical_dates);
                record.dates = Some(in_order.iter().map(|d| fmt_ts(*d)).collect());
                record.skipped_dates = skipped_of(&new);
                record.warnings = warnings_of(&new);
                let c = self.conn.get()?;
                record.estimate = eta::dry_run_estimate(c, &self.config, &new)?;
                Store::new(&mut c.db).record_request(&record)?;
            }
            Ruling::Admit(Accepted::Operate {
                id,
                effect,
                retry,
                reason,
            }) => {
                let host = self.host.clone();
                let by = ident.airflow_user.clone().unwrap_or_default();
                let key = file.key.clone();
                let done = c.db.transaction(|db| {
                    let mut s = Store::new(db);
                    if let Some(existing) = s.request(&key)? {
                        return Ok::<_, DbError>((existing.backfill_id, existing.warnings));
                    }
                    let now = Utc::now();
                    let affected = match (effect, &retry) {
                        (Effect::Withdraw, _) => {
                            let reason =
                                format!("withdrawn by {by} before its DAG copy was written");
                            s.withdraw(&id, &reason, now)?
                                || s.cancel(&id, &format!("cancelled by {by}"), now)?
                        }
                        (Effect::CancelRuns, _) => {
                            s.cancel(&id, &format!("cancelled by {by}"), now)?
                        }
                        (Effect::PauseCopy, _) => s.set_user_paused(&id, true, now)?,
                        (Effect::ResumeCopy, _) => s.set_user_paused(&id, false, now)?,
                        (Effect::DeleteCopy, _) => s.mark_deleted(&id, now)?,
                        (Effect::Approve, _) => s.approve(&id, &by, now)?,
                        (Effect::Reject, _) => {
                            let why = reason.as_deref().unwrap_or("no reason given");
                            s.reject(&id, &by, &format!("rejected by {by}: {why}"), now)?
                        }
                        (Effect::RetryFailed, new) if !new.is_empty() => {
                            let mut ids = Vec::new();
                            for one in new {
                                let new_id = free_id(&mut s, &one.dag_id)?;
                                s.insert_backfill(&new_id, one, &host, &key, now)?;
                                ids.push(new_id);
                            }
                            let mut accepted = record.clone();
                            accepted.outcome = Outcome::Accepted;
                            accepted.backfill_id = ids.first().cloned();
                            if ids.len() > 1 {
                                accepted.warnings = Some(vec![format!(
                                    "the failed dates are not consecutive: the retry is {} backfills, {}",
                                    ids.len(),
                                    ids.join(", ")
                                )]);
                            }
                            s.record_request(&accepted)?;
                            return Ok((ids.first().cloned(), accepted.warnings));
                        }
                        (Effect::RetryFailed, _) => false,
                    };
                    if !affected {
                        return Err(DbError::Data(format!(
                            "backfill {id} changed while {} was decided; deciding again",
                            action.as_str()
                        )));
                    }
                    let mut accepted = record.clone();
                    accepted.outcome = Outcome::Accepted;
                    accepted.backfill_id = Some(id.clone());
                    s.record_request(&accepted)?;
                    Ok((Some(id.clone()), None))
                })?;
                record.outcome = Outcome::Accepted;
                record.backfill_id = done.0;
                if done.1.is_some() {
                    record.warnings = done.1;
                }
            }
            Ruling::Admit(Accepted::Create(new)) => {
                record.skipped_dates = skipped_of(&new);
                record.warnings = warnings_of(&new);
                let host = self.host.clone();
                let mut cursor = self
                    .batch
                    .as_mut()
                    .and_then(|b| b.ids.get(&new.dag_id).copied());
                let id = c.db.transaction(|db| {
                    let mut s = Store::new(db);
                    if let Some(existing) = s.request(&file.key)? {
                        return Ok::<_, DbError>(existing.backfill_id);
                    }
                    let id = free_id_from(&mut s, &new.dag_id, &mut cursor)?;
                    s.insert_backfill(&id, &new, &host, &file.key, Utc::now())?;
                    let mut accepted = record.clone();
                    accepted.outcome = Outcome::Accepted;
                    accepted.backfill_id = Some(id.clone());
                    s.record_request(&accepted)?;
                    Ok(Some(id))
                })?;
                if let (Some(b), Some(cursor)) = (self.batch.as_mut(), cursor) {
                    b.ids.insert(new.dag_id.clone(), cursor);
                }
                record.outcome = Outcome::Accepted;
                record.backfill_id = id;
            }
        }
        Ok(record)
    }

    /// Every check of a request: a verdict (with who it was decided for), or `Err(_)` for a DB
    /// problem.
    pub(super) fn validate(&mut self, uid: u32, bytes: &[u8]) -> Result<Verdict, DbError> {
        let parsed = request::parse_any(bytes, self.config.limits.max_active_runs);
        let on_behalf_of = parsed
            .as_ref()
            .ok()
            .and_then(|p| p.on_behalf_of().map(str::to_owned));
        let action = parsed
            .as_ref()
            .map(Parsed::action)
            .unwrap_or(Action::Create);
        let target_of = |p: &Parsed| match p {
            Parsed::Create(r) => r.dag_id.clone(),
            Parsed::Operate(op) => op.id.clone(),
        };
        let (ident, subject) = match self.subject(uid, on_behalf_of.as_deref())? {
            Ruling::Admit(v) => v,
            Ruling::Refuse((ident, rejection)) => {
                return Ok(Verdict {
                    ident,
                    action,
                    target: parsed.ok().map(|p| target_of(&p)),
                    result: Ruling::Refuse(rejection),
                })
            }
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(r) => {
                return Ok(Verdict {
                    ident,
                    action,
                    target: None,
                    result: Ruling::Refuse(r),
                })
            }
        };
        let target = Some(target_of(&parsed));
        let result = match parsed {
            Parsed::Create(req) => self.check_create(&subject, &ident, req)?,
            Parsed::Operate(op) => self.check_operation(&subject, &ident, op)?,
        };
        Ok(Verdict {
            ident,
            action,
            target,
            result,
        })
    }

    /// The checks of a create request (or dry run): permission to create on its DAG, the DAG
    /// and its dates ([`Engine::check_dag`]), then its prerequisites.
    fn check_create(
        &mut self,
        subject: &Subject,
        ident: &Identity,
        req: Request,
    ) -> Checked<Accepted> {
        admit!(authz::authorize(subject, Action::Create, Some(&req.dag_id)));
        let dry_run = req.dry_run;
        let new = admit!(self.check_dag(req, ident)?);
        admit!(self.check_after(subject, &new.options.after)?);
        Ok(Ruling::Admit(if dry_run {
            Accepted::DryRun(Box::new(new))
        } else {
            Accepted::Create(Box::new(new))
        }))
    }
}
