// abbot/go-http-auth v0.4.0 predates Go modules; a directory replacement needs a go.mod.
module github.com/abbot/go-http-auth

go 1.21
