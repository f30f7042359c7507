-- DKIM delegation: a tenant whose DKIM selectors point into the platform's
-- DKIM zone by CNAME (<selector>._domainkey.<domain> CNAME
-- <selector>.<dkim_delegation>) has that zone name here; Lockdown then
-- publishes its new DKIM records itself (RFC 2136) and revokes the old one.
-- NULL: the tenant publishes its records in its own DNS.
ALTER TABLE tenants ADD COLUMN dkim_delegation text;
