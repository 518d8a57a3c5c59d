"""Live views of a cluster: ``inspect`` (injected pods and their proxies) and ``check`` (why a
pod is or is not injected), judged by the same core as the webhook.
"""
