# The demo's authorization policy (also used by the tests). Input shape: see README
# "Policy input". Decision: data.api.authz.allow.
package api.authz

import rego.v1

default allow := false

# Administrators may do anything.
allow if "admin" in input.user.roles

# Reading needs the read scope.
allow if {
	input.request.method == "GET"
	"items:read" in input.user.scopes
}

# Creating needs the write scope.
allow if {
	input.action == "post_items"
	"items:write" in input.user.scopes
}

# Changing or deleting an item: only its owner, with the write scope.
allow if {
	input.action in {"put_items", "delete_items"}
	"items:write" in input.user.scopes
	data.items.owners[input.resource.id] == input.user.id
}
