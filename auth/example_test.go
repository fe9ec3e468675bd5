package auth_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushd/pushd/auth"
)

// An upgrade request carrying an HS256 token in the subprotocol list, as a
// browser sends it: new WebSocket(url, ["pushd.v1", "bearer." + token]).
func ExampleAuthenticator_Check() {
	secret := []byte(strings.Repeat("x", 32))
	origins, _ := auth.NewOriginPolicy([]string{"https://*.example.com"}, false)
	a, err := auth.New(auth.Config{Keys: auth.KeyConfig{HS256Secret: secret}, Required: true, Origins: origins})
	if err != nil {
		panic(err)
	}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "42", "exp": time.Now().Add(time.Hour).Unix(), "channels": []string{"room:*"},
	}).SignedString(secret)

	g, err := a.Check(auth.Request{URI: "/ws", Origin: "https://app.example.com", Protocols: []string{"pushd.v1", "bearer." + tok}})
	fmt.Println(g.PersonalChannel(), g.Channels, g.Source, err)

	_, err = a.Check(auth.Request{URI: "/ws?token=" + tok, Origin: "https://evil.com"})
	fmt.Println(err)
	_, err = a.Check(auth.Request{URI: "/ws", Origin: "https://app.example.com"})
	fmt.Println(err)
	// Output:
	// user:42 [room:*] subprotocol <nil>
	// auth: origin not allowed
	// auth: token required
}
