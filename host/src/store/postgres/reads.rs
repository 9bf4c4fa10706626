//! Reading the database: the store traits over pooled connections. Each read is one statement
//! (a stream's head: two, pipelined), at the server's read-committed isolation.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::Object;
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;

use super::{PgStore, unavailable};
use crate::domain::subscription::{DeadLetter, StartAt, Subscription};
use crate::domain::{EventRecord, ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaDefinition, SagaName};
use crate::store::kv::{self, decode, decode_u64, decode_write};
use crate::store::*;

const GET: &str = "SELECT v FROM sagahost_kv WHERE k = $1";
const GET_MANY: &str = "SELECT k, v FROM sagahost_kv WHERE k = ANY($1::bytea[])";
const RANGE: &str = "SELECT k, v FROM sagahost_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3";
const RANGE_DESC: &str = "SELECT k, v FROM sagahost_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3";
const KEYS_DESC: &str = "SELECT k FROM sagahost_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3";
const LAST_MANY: &str = "SELECT p.lo, l.k, l.v FROM unnest($1::bytea[], $2::bytea[]) AS p(lo, hi) \
     CROSS JOIN LATERAL (SELECT k, v FROM sagahost_kv WHERE k >= p.lo AND k < p.hi ORDER BY k DESC LIMIT 1) AS l";

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A page size for scans whose length the caller does not bound.
const PAGE: i64 = 1_000;

impl PgStore {
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let conn = self.conn().await?;
        let statement = conn.prepare_cached(sql).await.map_err(unavailable)?;
        conn.query(&statement, params).await.map_err(unavailable)
    }

    async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rows(GET, &[&key]).await?.first().map(|r| r.get(0)))
    }

    async fn get_json<T: DeserializeOwned>(&self, key: Vec<u8>) -> Result<Option<T>, StoreError> {
        self.get(key).await?.map(|v| decode(&v)).transpose()
    }

    /// Pairs from `lo` (inclusive) to `hi` (exclusive), at most `limit`, in key order or reversed.
    async fn range(&self, lo: &[u8], hi: &[u8], limit: usize, newest_first: bool) -> Result<Pairs, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = if newest_first { RANGE_DESC } else { RANGE };
        Ok(self.rows(sql, &[&lo, &hi, &limit]).await?.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every pair under `prefix`, in key order, a page at a time.
    async fn scan(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let end = keys::prefix_end(prefix);
        let mut out: Pairs = Vec::new();
        loop {
            let from = match out.last() {
                Some((k, _)) => [k.as_slice(), &[0]].concat(),
                None => prefix.to_vec(),
            };
            let page = self.range(&from, &end, PAGE as usize, false).await?;
            let done = page.len() < PAGE as usize;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Ids of an index, newest first, below `end` (exclusive), at most `limit`.
    async fn index_ids(&self, prefix: &[u8], end: &[u8], limit: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.rows(KEYS_DESC, &[&prefix, &end, &limit]).await?.into_iter().map(|r| r.get(0)).collect())
    }

    /// The current heads of `ids` (absent ones left out).
    async fn summaries(&self, ids: &[ExecutionId]) -> Result<HashMap<ExecutionId, ExecutionSummary>, StoreError> {
        let stored: Vec<Vec<u8>> = ids.iter().map(|id| keys::summary(*id)).collect();
        let lo: Vec<Vec<u8>> = ids.iter().map(|id| keys::events_of(*id)).collect();
        let hi: Vec<Vec<u8>> = lo.iter().map(|p| keys::prefix_end(p)).collect();
        let conn = self.conn().await?;
        let (get_many, last_many) =
            tokio::try_join!(conn.prepare_cached(GET_MANY), conn.prepare_cached(LAST_MANY)).map_err(unavailable)?;
        let (p1, p2): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 2]) = ([&stored], [&lo, &hi]);
        let (heads, lasts) =
            tokio::try_join!(conn.query(&get_many, &p1), conn.query(&last_many, &p2)).map_err(unavailable)?;
        let lasts: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)> =
            lasts.into_iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        let mut out = HashMap::new();
        for row in heads {
            let k: Vec<u8> = row.get(0);
            let id = keys::trailing_id(&k).ok_or_else(|| StoreError::Corrupt("summary key".into()))?;
            let v: Vec<u8> = row.get(1);
            let last = lasts.get(&keys::events_of(id)).map(|(k, v)| (&k[..], &v[..]));
            if let Some(s) = kv::current_summary(Some(&v), last)? {
                out.insert(id, s);
            }
        }
        Ok(out)
    }

    /// Ids under an index prefix, all of them.
    async fn all_ids(&self, prefix: &[u8]) -> Result<Vec<ExecutionId>, StoreError> {
        self.scan(prefix)
            .await?
            .iter()
            .map(|(k, _)| keys::trailing_id(k).ok_or_else(|| StoreError::Corrupt("index key".into())))
            .collect()
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn create_with(
        &self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.writer.create(id, saga, records, idem).await
    }

    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError> {
        self.writer.append(id, expected, records, state, true).await
    }

    async fn append(&self, id: ExecutionId, expected: u64, records: Vec<EventRecord>) -> Result<(), StoreError> {
        self.writer.append(id, expected, records, Effects::default(), false).await
    }

    async fn idempotency(&self, key: &IdempotencyKey) -> Result<Option<commit::KeyRecord>, StoreError> {
        self.get(keys::idempotency(&key.saga, &key.key)).await?.map(|v| kv::decode_idempotency(&v)).transpose()
    }

    async fn read(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, StoreError> {
        let (lo, hi) = (keys::event(id, after.saturating_add(1)), keys::prefix_end(&keys::events_of(id)));
        let mut records = Vec::new();
        for (_, v) in self.range(&lo, &hi, usize::MAX, false).await? {
            records.extend(decode_write::<EventRecord>(&v)?.into_iter().filter(|r| r.seq > after));
        }
        if records.is_empty() && self.get(keys::summary(id)).await?.is_none() {
            return Err(StoreError::NotFound(id));
        }
        Ok(records)
    }

    async fn summary(&self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        Ok(self.summaries(&[id]).await?.remove(&id))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let prefix = match (&filter.key, &filter.saga, filter.status) {
            (Some(key), _, _) => keys::key_index(key),
            (None, Some(saga), _) => keys::saga_index(saga),
            (None, None, Some(status)) => keys::status_index(status),
            (None, None, None) => keys::summaries(),
        };
        let mut end = match filter.after {
            Some(id) => [prefix.as_slice(), id.as_bytes()].concat(),
            None => keys::prefix_end(&prefix),
        };
        let page = i64::try_from(filter.limit.clamp(1, PAGE as usize)).unwrap_or(PAGE);
        let mut out = Vec::new();
        while out.len() < filter.limit {
            let found = self.index_ids(&prefix, &end, page).await?;
            let Some(last) = found.last() else { break };
            end = last.clone();
            let ids: Vec<ExecutionId> = found
                .iter()
                .map(|k| keys::trailing_id(k).ok_or_else(|| StoreError::Corrupt("index key".into())))
                .collect::<Result<_, _>>()?;
            let mut heads = self.summaries(&ids).await?;
            for id in ids {
                let Some(s) = heads.remove(&id) else { continue };
                if out.len() < filter.limit
                    && filter.status.is_none_or(|st| st == s.status)
                    && filter.saga.as_ref().is_none_or(|g| *g == s.saga)
                {
                    out.push(s);
                }
            }
            if (found.len() as i64) < page {
                break;
            }
        }
        Ok(out)
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let quarantined: HashSet<ExecutionId> = self.all_ids(&keys::quarantined()).await?.into_iter().collect();
        let mut ids = Vec::new();
        for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
            let mut found = self.all_ids(&keys::status_index(status)).await?;
            // Newest first, as sled lists them.
            found.reverse();
            ids.extend(found.into_iter().filter(|id| !quarantined.contains(id)));
        }
        Ok(ids)
    }

    async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), StoreError> {
        self.writer.quarantine(entry).await
    }

    async fn ended(
        &self,
        until: u64,
        after: Option<(u64, ExecutionId)>,
        limit: usize,
    ) -> Result<Vec<Ended>, StoreError> {
        let page = self.range(&kv::ended_from(after), &keys::ended_until(until), limit, false).await?;
        page.iter().map(|(k, v)| kv::decode_ended(k, v)).collect()
    }

    async fn remove(&self, entries: Vec<(Ended, u64)>) -> Result<Vec<Removal>, StoreError> {
        self.writer.remove(entries).await
    }

    async fn keys_made(&self, until: u64, limit: usize) -> Result<Vec<MadeKey>, StoreError> {
        let page = self.range(&keys::keys_made(), &keys::keys_made_until(until), limit, false).await?;
        page.iter().map(|(k, v)| kv::decode_key_made(k, v)).collect()
    }

    async fn forget_keys(&self, made: Vec<MadeKey>) -> Result<usize, StoreError> {
        self.writer.forget_keys(made).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.conn().await?.simple_query("SELECT 1").await.map(drop).map_err(unavailable)
    }

    async fn claim(&self, id: ExecutionId) -> Result<Claim, StoreError> {
        self.writer.claim(id).await
    }

    fn shared(&self) -> Option<std::time::Duration> {
        Some(self.lease / 4)
    }

    async fn adopt(&self, startup: bool) -> Result<Vec<ExecutionId>, StoreError> {
        super::leases::adopt(&self.pool, self.lock, self.host, startup).await
    }

    async fn wake(&self, host: HostId, id: ExecutionId) -> Result<(), StoreError> {
        super::leases::wake(&self.pool, self.lock, host, id).await
    }

    fn delivery_turn(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.turn.clone())
    }

    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        crate::sync::lock(&self.wakeups).take()
    }

    async fn quarantined(&self, id: ExecutionId) -> Result<Option<QuarantineEntry>, StoreError> {
        self.get_json(keys::quarantine(id)).await
    }

    async fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.scan(&keys::quarantined()).await?.iter().map(|(_, v)| decode(v)).collect()
    }
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn put_plugin(
        &self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        self.writer.put_plugin(meta, bytes, artifact).await
    }

    async fn plugin(&self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        self.get_json(keys::plugin(name, version)).await
    }

    async fn plugins(&self) -> Result<Vec<PluginMeta>, StoreError> {
        self.scan(&keys::plugins()).await?.iter().map(|(_, v)| decode(v)).collect()
    }

    async fn plugin_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(keys::blob(digest)).await
    }

    async fn artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(keys::artifact(key)).await
    }

    async fn put_artifact(&self, key: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.writer.put_artifact(key, bytes).await
    }

    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        self.writer.put_definition(name, definition, at).await
    }

    async fn definition(&self, name: &SagaName, version: Option<u64>) -> Result<Option<StoredDefinition>, StoreError> {
        match version {
            Some(v) => self.get_json(keys::definition(name, v)).await,
            None => {
                let prefix = keys::definitions_of(name);
                let last = self.range(&prefix, &keys::prefix_end(&prefix), 1, true).await?;
                last.first().map(|(_, v)| decode(v)).transpose()
            }
        }
    }

    async fn definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        let mut latest: Vec<StoredDefinition> = Vec::new();
        for (_, v) in self.scan(&keys::definitions()).await? {
            let d: StoredDefinition = decode(&v)?;
            match latest.last_mut() {
                Some(last) if last.name == d.name => *last = d,
                _ => latest.push(d),
            }
        }
        Ok(latest)
    }
}

#[async_trait]
impl TopicStore for PgStore {
    async fn publish(&self, event: crate::domain::TopicEvent) -> Result<(u64, bool), StoreError> {
        self.writer.publish(event).await
    }

    async fn topic_events(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        let (lo, hi) = (keys::topic_event(after.saturating_add(1)), keys::prefix_end(&keys::topic_events()));
        self.range(&lo, &hi, limit, false)
            .await?
            .iter()
            .map(|(k, v)| {
                let seq = keys::event_seq(k).ok_or_else(|| StoreError::Corrupt("topic event key".into()))?;
                Ok((seq, decode(v)?))
            })
            .collect()
    }

    async fn topic_events_by_key(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        let prefix = keys::topic_events_by_key(key);
        let indexed = self.range(&prefix, &keys::prefix_end(&prefix), limit, true).await?;
        let mut seqs = Vec::with_capacity(indexed.len());
        for (k, _) in &indexed {
            seqs.push(keys::event_seq(k).ok_or_else(|| StoreError::Corrupt("topic key index".into()))?);
        }
        seqs.reverse();
        let wanted: Vec<Vec<u8>> = seqs.iter().map(|s| keys::topic_event(*s)).collect();
        let found: HashMap<Vec<u8>, Vec<u8>> =
            self.rows(GET_MANY, &[&wanted]).await?.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        seqs.into_iter()
            .zip(wanted)
            .map(|(seq, k)| {
                let v = found
                    .get(&k)
                    .ok_or_else(|| StoreError::Corrupt(format!("topic event {seq} is indexed but missing")))?;
                Ok((seq, decode(v)?))
            })
            .collect()
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        match self.get(keys::cursor(name)).await? {
            Some(v) => decode_u64(&v, "cursor"),
            None => Ok(0),
        }
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.writer.set_cursor(name.to_owned(), seq).await
    }
}

#[async_trait]
impl SubscriptionStore for PgStore {
    async fn subscription_put(&self, sub: Subscription, start: StartAt) -> Result<bool, StoreError> {
        self.writer.put_subscription(sub, start).await
    }

    async fn subscription_delete(&self, name: &str) -> Result<bool, StoreError> {
        self.writer.delete_subscription(name.to_owned()).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.scan(&keys::subscriptions()).await?.iter().map(|(_, v)| decode(v)).collect()
    }

    async fn dead_letters_write(
        &self,
        name: &str,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.writer.dead_letters(name.to_owned(), letters, cursor).await
    }

    async fn dead_letters(&self, name: &str, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let (lo, hi) =
            (keys::dead_letter(name, after.saturating_add(1)), keys::prefix_end(&keys::dead_letters_of(name)));
        self.range(&lo, &hi, limit, false).await?.iter().map(|(_, v)| decode(v)).collect()
    }
}

#[async_trait]
impl SecretStore for PgStore {
    async fn secret_put(&self, name: String, record: Vec<u8>) -> Result<bool, StoreError> {
        self.writer.put_secret(name, record).await
    }

    async fn secret_delete(&self, name: String) -> Result<bool, StoreError> {
        self.writer.delete_secret(name).await
    }

    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(keys::secret(name)).await
    }

    async fn secrets(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = keys::secrets();
        self.scan(&prefix)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| StoreError::Corrupt("secret name".into()))?;
                Ok((name, v))
            })
            .collect()
    }
}

#[async_trait]
impl StateStore for PgStore {
    async fn state_get(&self, key: &StateKey) -> Result<Option<StateEntry>, StoreError> {
        self.get(keys::state(key)).await?.map(|v| StateValue::decode(&v)).transpose()
    }

    async fn state_list(
        &self,
        plugin: &PluginName,
        collection: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(StateKey, StateEntry)>, StoreError> {
        let mut scan = keys::state_of(plugin, collection);
        if collection.is_some() {
            scan.extend_from_slice(prefix.as_bytes());
        }
        let end = keys::prefix_end(&scan);
        let mut from = scan.clone();
        let mut out = Vec::new();
        // Without a collection, the prefix filters keys across collections: page until enough.
        while out.len() < limit {
            let page = self.range(&from, &end, PAGE as usize, false).await?;
            let done = page.len() < PAGE as usize;
            for (k, v) in &page {
                let key = keys::parse_state(plugin, k).ok_or_else(|| StoreError::Corrupt("state key".into()))?;
                if key.key.starts_with(prefix) && out.len() < limit {
                    out.push((key, StateValue::decode(v)?));
                }
            }
            match page.last() {
                Some((k, _)) if !done => from = [k.as_slice(), &[0]].concat(),
                _ => break,
            }
        }
        Ok(out)
    }
}
