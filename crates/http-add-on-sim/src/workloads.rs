//! Deployment controller, kubelet (pods as built-in HTTP apps), EndpointSlice controller and Service proxy.
