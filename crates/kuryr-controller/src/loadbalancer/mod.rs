//! Services → Octavia load balancers (`crate::loadbalancer`; upstream `ServiceHandler`,
//! `EndpointsHandler`, `KuryrLoadBalancerHandler`). Empty today: the Service and
//! KuryrLoadBalancer reconcilers, listeners, pools, members and floating IPs will live here.
