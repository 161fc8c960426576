//! Namespace networks (`crate::namespace`; upstream `NamespaceHandler`, `KuryrNetworkHandler`).
//! Empty today: the Namespace and KuryrNetwork reconcilers (a network, subnet and router
//! interface per namespace with the namespace subnet driver) will live here.
