//! Wire types of the platform route family: IAM (sign-up, login, orgs, projects, members,
//! service accounts, API keys), billing (invoices, usage) and audit join here. None yet: the
//! platform family serves only probes and metrics today.
