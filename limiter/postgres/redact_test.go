package postgres_test

import (
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/limiter/postgres"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name   string
		dsn    string
		want   string
		secret string // must not appear in the result; "" for none
	}{
		{
			name:   "url with password",
			dsn:    "postgres://sluice:s3cret@db.internal:5432/sluice?sslmode=disable",
			want:   "postgres://sluice@db.internal:5432/sluice",
			secret: "s3cret",
		},
		{
			name:   "postgresql scheme, default port",
			dsn:    "postgresql://sluice:s3cret@db.internal/sluice?sslmode=disable",
			want:   "postgres://sluice@db.internal:5432/sluice",
			secret: "s3cret",
		},
		{
			name: "url without password",
			dsn:  "postgres://sluice@db.internal:5432/sluice?sslmode=disable",
			want: "postgres://sluice@db.internal:5432/sluice",
		},
		{
			name:   "url with percent-encoded password",
			dsn:    "postgres://sluice:p%40ss%2Fword@db:5432/sluice?sslmode=disable",
			want:   "postgres://sluice@db:5432/sluice",
			secret: "p%40ss",
		},
		{
			name:   "url with '@' in the password",
			dsn:    "postgres://sluice:p@ss@db:5432/sluice?sslmode=disable",
			want:   "postgres://db:5432",
			secret: "p@ss",
		},
		{
			name:   "url with unescaped '/' in the password",
			dsn:    "postgres://sluice:pa/ss@db:5432/sluice",
			want:   "postgres://db:5432",
			secret: "pa",
		},
		{
			name:   "url with unescaped '/' and '?' in the password",
			dsn:    "postgres://sluice:12/s?s@db/sluice",
			want:   "postgres://",
			secret: "12",
		},
		{
			name:   "url with digits around an unescaped '/' in the password",
			dsn:    "postgres://sluice:1234/5678@db/sluice",
			want:   "postgres://db",
			secret: "1234",
		},
		{
			name:   "url password in the query",
			dsn:    "postgres://sluice@db/sluice?sslmode=disable&password=s3cret&application_name=sluice",
			want:   "postgres://sluice@db:5432/sluice",
			secret: "s3cret",
		},
		{
			name:   "url password in the query with '@'",
			dsn:    "postgres://sluice@db/sluice?password=s3@cret&sslmode=disable",
			want:   "postgres://",
			secret: "cret",
		},
		{
			name:   "url missing host",
			dsn:    "postgres://sluice:s3cret/sluice",
			want:   "postgres://sluice:?",
			secret: "s3cret",
		},
		{
			name: "url multiple hosts",
			dsn:  "postgres://sluice:s3cret@db1:5432,db2:5433/sluice?sslmode=disable",
			want: "postgres://sluice@db1:5432,db2:5433/sluice",
		},
		{
			name:   "url in capitals",
			dsn:    "POSTGRES://sluice:s3cret@db/sluice?sslmode=disable",
			want:   "postgres://db",
			secret: "s3cret",
		},
		{
			name:   "key/value with password",
			dsn:    "host=db user=sluice password=s3cret dbname=sluice sslmode=disable",
			want:   "postgres://sluice@db:5432/sluice",
			secret: "s3cret",
		},
		{
			name:   "key/value with quoted password",
			dsn:    "host=db user=sluice password='s3 cr\\'et' dbname=sluice sslmode=disable",
			want:   "postgres://sluice@db:5432/sluice",
			secret: "cr",
		},
		{
			name:   "key/value unterminated quoted password",
			dsn:    "host=db password='s3cret dbname=sluice",
			want:   "(a keyword/value DSN that does not parse)",
			secret: "s3cret",
		},
		{
			name: "empty",
			dsn:  "",
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := postgres.RedactDSN(tt.dsn)
			if got != tt.want {
				t.Errorf("RedactDSN(%q)\n got %q\nwant %q", tt.dsn, got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("RedactDSN(%q) = %q shows %q", tt.dsn, got, tt.secret)
			}
		})
	}
}
