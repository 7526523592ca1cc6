//! Wire types of the app platform route family (apps, versions, deployments). None yet.
