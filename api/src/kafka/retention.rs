//! How long the broker keeps records (`KAFKA_RETENTION_HOURS`), set on the
//! three topics at every start, also on topics that exist already.
//!
//! Native mode needs it: Tansu 0.6 deletes records by age only on topics
//! whose `cleanup.policy` is `delete` (its default is to keep everything),
//! so without it `.data/tansu.db` grows for as long as the service runs
//! (docs/OPERATIONS.md, "Retention"). Apache Kafka deletes after 7 days by
//! default; the setting applies there too when it is set.
//!
//! Topics that exist already are changed with IncrementalAlterConfigs: the
//! only config-changing request Tansu answers (not AlterConfigs, which is
//! all that rdkafka's `AdminClient` offers), so it is called through
//! librdkafka's C API here, the one unsafe code of the crate.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

/// Why the retention could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused: {0}")]
    Refused(String),
    #[error("a topic name holds a NUL byte")]
    Name,
}

/// The configs that make `retention` the topics' retention.
pub fn configs(retention: Duration) -> [(&'static str, String); 2] {
    [
        ("cleanup.policy", "delete".to_owned()),
        ("retention.ms", retention.as_millis().to_string()),
    ]
}

/// Sets `cleanup.policy=delete` and `retention.ms` on each of `topics`.
/// Blocking (it waits for the broker's answer): run it off the runtime.
pub fn set(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
    retention: Duration,
    timeout: Duration,
) -> Result<(), RetentionError> {
    let names = topics
        .iter()
        .map(|t| CString::new(*t).map_err(|_| RetentionError::Name))
        .collect::<Result<Vec<_>, _>>()?;
    let configs: Vec<(CString, CString)> = configs(retention)
        .into_iter()
        .filter_map(|(k, v)| Some((CString::new(k).ok()?, CString::new(v).ok()?)))
        .collect();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = admin.inner().native_ptr();
    // SAFETY: every object is created, used and destroyed here, in the order
    // librdkafka's admin API documents: resources and options are owned by
    // us until destroyed below; the event, polled from our own queue, is
    // destroyed after its result (which it owns) has been read.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        );
        // The broker's answer within the same time we wait for it, so a
        // request never succeeds after we reported a timeout.
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut refused: Option<String> = None;
        let mut resources: Vec<*mut rd::rd_kafka_ConfigResource_t> = Vec::new();
        for name in &names {
            let resource = rd::rd_kafka_ConfigResource_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
            );
            if resource.is_null() {
                refused.get_or_insert_with(|| "a topic resource could not be made".into());
                continue;
            }
            resources.push(resource);
            for (key, value) in &configs {
                let error = rd::rd_kafka_ConfigResource_add_incremental_config(
                    resource,
                    key.as_ptr(),
                    rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                    value.as_ptr(),
                );
                if !error.is_null() {
                    let text = CStr::from_ptr(rd::rd_kafka_error_string(error))
                        .to_string_lossy()
                        .into_owned();
                    refused.get_or_insert(text);
                    rd::rd_kafka_error_destroy(error);
                }
            }
        }
        if let Some(reason) = refused {
            // Nothing is sent when the request could not be made whole.
            rd::rd_kafka_ConfigResource_destroy_array(resources.as_mut_ptr(), resources.len());
            rd::rd_kafka_AdminOptions_destroy(options);
            rd::rd_kafka_queue_destroy(queue);
            return Err(RetentionError::Refused(reason));
        }
        rd::rd_kafka_IncrementalAlterConfigs(
            rk,
            resources.as_mut_ptr(),
            resources.len(),
            options,
            queue,
        );
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
        let outcome = if event.is_null() {
            Err(RetentionError::Timeout(timeout))
        } else {
            let outcome = read_result(event);
            rd::rd_kafka_event_destroy(event);
            outcome
        };
        rd::rd_kafka_ConfigResource_destroy_array(resources.as_mut_ptr(), resources.len());
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        outcome
    }
}

/// The request's error, or the first resource's.
///
/// # Safety
/// `event` is a live IncrementalAlterConfigs result event.
unsafe fn read_result(event: *mut rd::rd_kafka_event_t) -> Result<(), RetentionError> {
    let text = |p: *const std::os::raw::c_char| {
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(RetentionError::Refused(text(
            rd::rd_kafka_event_error_string(event),
        )));
    }
    let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event);
    if result.is_null() {
        return Err(RetentionError::Refused("no result in the answer".into()));
    }
    let mut count = 0usize;
    let resources = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
    for i in 0..count {
        let resource = *resources.add(i);
        if rd::rd_kafka_ConfigResource_error(resource)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(RetentionError::Refused(format!(
                "{}: {}",
                text(rd::rd_kafka_ConfigResource_name(resource)),
                text(rd::rd_kafka_ConfigResource_error_string(resource))
            )));
        }
    }
    Ok(())
}
