//go:build tools

// Package helm pins the helm command as a build dependency (see ../build_helm.sh).
package helm

import _ "helm.sh/helm/v3/cmd/helm"
