module meshinject.local/cluster/nullwebhook

go 1.26.0
