"""Pod annotations -> validated overrides of the mesh config (capture, proxy, L7 policy).
Pure: strings in, frozen values out; a bad value names the annotation and the value.
"""
