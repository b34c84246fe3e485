//! Control-socket queries (`list`, `status`, `outcome`, `cluster`, `audit_verify`): identity,
//! authorization and audit as for requests, answers from backfilld's tables.

use super::*;

impl Engine {
    /// Answer a control request.
    pub fn query(&mut self, uid: u32, request: ControlRequest) -> ControlResponse {
        match self.try_query(uid, request) {
            Ok(r) => r,
            Err(e) => {
                self.lost(&e);
                ControlResponse::Error {
                    message: e.to_string(),
                }
            }
        }
    }

    pub(super) fn try_query(
        &mut self,
        uid: u32,
        request: ControlRequest,
    ) -> Result<ControlResponse, DbError> {
        if let ControlRequest::ImportSeed { dry_run, attach } = request {
            self.ensure_connected()?;
            return self.import_seed(uid, dry_run, attach);
        }
        if let ControlRequest::ImportSeedStatus { job, report } = request {
            self.ensure_connected()?;
            return self.import_status(uid, job, report);
        }
        if let ControlRequest::Outcome { file_name } = &request {
            // Decide anything waiting first, so a fresh submit gets its answer at once.
            if !spool::valid_file_name(file_name) {
                return Ok(ControlResponse::Error {
                    message: format!("{file_name:?} is not a valid request file name"),
                });
            }
            self.scan();
        }
        self.ensure_connected()?;
        if let ControlRequest::Outcome { file_name } = &request {
            // A caller only ever sees the outcome of files it owned: no further check.
            let c = self.conn.get()?;
            return Ok(match Store::new(&mut c.db).outcome(uid, file_name)? {
                Some(r) => ControlResponse::Decided {
                    request: Box::new(r.into()),
                },
                None => ControlResponse::Pending,
            });
        }
        let target = match &request {
            ControlRequest::Status { id } => Some(id.clone()),
            ControlRequest::AuditVerify => Some("audit".to_owned()),
            _ => None,
        };
        let (ident, subject) = match allowed(self.subject(uid, None)?, Action::Read) {
            Ruling::Admit(v) => v,
            Ruling::Refuse((ident, r)) => {
                self.audit(&ident, Action::Read, target.as_deref(), Some(&r))?;
                return Ok(ControlResponse::Error {
                    message: denied_message(&r),
                });
            }
        };
        let c = self.conn.get()?;
        let mut s = Store::new(&mut c.db);
        let response = match request {
            ControlRequest::Status { id } => match s.backfill_any(&id)? {
                Some(b) => match authz::authorize(&subject, Action::Read, Some(&b.dag_id)) {
                    Ok(()) => {
                        let mut view = BackfillView::from(&b);
                        view.estimate = estimate_of(c, &b, &self.config)?;
                        ControlResponse::Backfill {
                            backfill: Box::new(view),
                        }
                    }
                    Err(d) => {
                        let r = Rejection::from(d);
                        self.audit(&ident, Action::Read, Some(&id), Some(&r))?;
                        return Ok(ControlResponse::Error {
                            message: denied_message(&r),
                        });
                    }
                },
                None => ControlResponse::Error {
                    message: format!("no backfill with id {id:?}"),
                },
            },
            ControlRequest::List {
                filter,
                limit,
                cursor,
            } => {
                let asked = paging::page_size(limit, paging::DEFAULT_LIMIT, paging::MAX_LIMIT)
                    .and_then(|limit| {
                        Ok((limit, cursor.as_deref().map(PageKey::decode).transpose()?))
                    });
                match asked {
                    Ok((limit, after)) => {
                        let page = listing::page(
                            &mut c.db,
                            &filter.query(),
                            after,
                            limit,
                            0,
                            |b| filter.matches(b) && subject.can_read_dag(&b.dag_id),
                            |b: &BackfillRow| BackfillView::from(b),
                        )?;
                        ControlResponse::Backfills {
                            backfills: page.items,
                            next: page.next.map(|k| k.encode()),
                        }
                    }
                    Err(e) => ControlResponse::Error {
                        message: e.to_string(),
                    },
                }
            }
            ControlRequest::Outcome { .. }
            | ControlRequest::ImportSeed { .. }
            | ControlRequest::ImportSeedStatus { .. } => ControlResponse::Pending,
            ControlRequest::Cluster => ControlResponse::Cluster {
                host_id: self.host.clone(),
                leader: self.leader_token.is_some(),
                dags_folder_shared: self.config.cluster.dags_folder_shared,
                claims: Leases::new(&mut c.db)
                    .all()?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            },
            ControlRequest::AuditVerify => ControlResponse::AuditReport {
                report: s.verify_audit()?,
            },
        };
        self.audit_read(&ident, target.as_deref())?;
        Ok(response)
    }
}
