//! VMs added to and removed from a running lab, in a subnet the caller made through the
//! API (a second network of a tenant, say): namespace, node, the agent's `eth0`, DHCP.

use std::net::Ipv4Addr;

use serde_json::json;

use super::{dhcp, ip, Lab};
use crate::api::field;
use crate::state::VmRecord;
use crate::Error;

impl Lab {
    /// Adds VM `name` of tenant `tenant` in subnet `subnet_id` on host `host` (`h1`, ...),
    /// at `vip` or the lowest free address, and waits for its DHCP lease. Its namespace
    /// exists before the node does, so that the agent puts the node's TAP into it.
    pub fn add_vm(
        &mut self,
        tenant: &str,
        subnet_id: &str,
        name: &str,
        host: &str,
        vip: Option<Ipv4Addr>,
    ) -> Result<VmRecord, Error> {
        crate::check_vm_name(name)?;
        if self.state.vm(name).is_some() {
            return Err(Error::Refused(format!("the lab has a VM named {name}")));
        }
        let host_id = self
            .state
            .host(host)
            .map(|h| h.id.clone())
            .ok_or_else(|| Error::Refused(format!("no host {host}")))?;
        let api = self
            .tenant_api(tenant)
            .ok_or_else(|| Error::Refused(format!("no tenant {tenant}")))?;
        let netns = format!("{}-{name}", self.state.prefix);
        self.make_netns(&netns)?;
        let mut body = json!({"subnet_id": subnet_id, "name": name, "host_id": host_id});
        if let Some(vip) = vip {
            body["vip"] = json!(vip.to_string());
        }
        let node = match api.post("/v1/nodes", body) {
            Ok(n) => n,
            Err(e) => {
                let _ = ip(&["netns", "del", &netns]);
                return Err(e);
            }
        };
        let mut rec = VmRecord {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            id: field(&node, "id")?,
            host: host.to_owned(),
            netns,
            vip: field(&node, "vip")?,
            mac: field(&node, "mac")?,
            address: None,
        };
        // Recorded before DHCP, so that remove_vm (and the lab's teardown) finds it.
        self.state.vms.push(rec.clone());
        self.state.save()?;
        let lease = dhcp(&rec.netns, &self.udhcpc_script()?)?;
        rec.address = Some(format!("{}/{}", lease.ip, lease.mask));
        if let Some(v) = self.state.vms.iter_mut().find(|v| v.name == name) {
            v.address = rec.address.clone();
        }
        self.state.save()?;
        Ok(rec)
    }

    /// Removes VM `name`: its node (as its tenant), then its namespace.
    pub fn remove_vm(&mut self, name: &str) -> Result<(), Error> {
        let v = self
            .state
            .vm(name)
            .cloned()
            .ok_or_else(|| Error::Refused(format!("no VM {name}")))?;
        let api = self
            .tenant_api(&v.tenant)
            .ok_or_else(|| Error::Refused(format!("no tenant {}", v.tenant)))?;
        let deleted = api.delete(&format!("/v1/nodes/{}", v.id));
        let removed = ip(&["netns", "del", &v.netns]);
        self.state.vms.retain(|r| r.name != name);
        self.state.save()?;
        deleted?;
        removed.map(drop)
    }
}
