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
			dsn:    "postgres://sluice:s3cret@db.internal:5432/sluice?sslmode=require",
			want:   "postgres://sluice:xxxxx@db.internal:5432/sluice?sslmode=require",
			secret: "s3cret",
		},
		{
			name:   "postgresql scheme",
			dsn:    "postgresql://sluice:s3cret@db.internal/sluice",
			want:   "postgresql://sluice:xxxxx@db.internal/sluice",
			secret: "s3cret",
		},
		{
			name: "url without password",
			dsn:  "postgres://sluice@db.internal:5432/sluice?sslmode=disable",
			want: "postgres://sluice@db.internal:5432/sluice?sslmode=disable",
		},
		{
			name: "url without user",
			dsn:  "postgres://127.0.0.1:5432/sluice_test?sslmode=disable",
			want: "postgres://127.0.0.1:5432/sluice_test?sslmode=disable",
		},
		{
			name:   "url with empty password",
			dsn:    "postgres://sluice:@db/sluice",
			want:   "postgres://sluice:xxxxx@db/sluice",
			secret: "",
		},
		{
			name:   "url with percent-encoded password",
			dsn:    "postgres://sluice:p%40ss%2Fword@db:5432/sluice",
			want:   "postgres://sluice:xxxxx@db:5432/sluice",
			secret: "p%40ss",
		},
		{
			name:   "url with '@' in the password",
			dsn:    "postgres://sluice:p@ss@db:5432/sluice",
			want:   "postgres://sluice:xxxxx@xxxxx@db:5432/sluice",
			secret: "ss@db",
		},
		{
			name:   "url with unescaped '/' in the password",
			dsn:    "postgres://sluice:pa/ss@db:5432/sluice",
			want:   "postgres://xxxxx@db:5432/sluice",
			secret: "pa/ss",
		},
		{
			name:   "url with unescaped '/' and '?' in the password",
			dsn:    "postgres://sluice:12/s?s@db/sluice",
			want:   "postgres://xxxxx@db/sluice",
			secret: "12/s?s",
		},
		{
			name:   "url password in the query",
			dsn:    "postgres://sluice@db/sluice?sslmode=require&password=s3cret&application_name=sluice",
			want:   "postgres://sluice@db/sluice?sslmode=require&password=xxxxx&application_name=sluice",
			secret: "s3cret",
		},
		{
			name:   "url password in the query with '@'",
			dsn:    "postgres://sluice@db/sluice?password=s3@cret&sslmode=disable",
			want:   "postgres://sluice@db/sluice?password=xxxxx&sslmode=disable",
			secret: "cret",
		},
		{
			name:   "url encoded password key and sslpassword",
			dsn:    "postgres://sluice@db/sluice?pass%77ord=s3cret&sslpassword=k3ypass",
			want:   "postgres://sluice@db/sluice?pass%77ord=xxxxx&sslpassword=xxxxx",
			secret: "s3cret",
		},
		{
			name:   "url missing host",
			dsn:    "postgres://sluice:s3cret/sluice",
			want:   "postgres://sluice:xxxxx/sluice",
			secret: "s3cret",
		},
		{
			name: "url multiple hosts",
			dsn:  "postgres://sluice:s3cret@db1:5432,db2:5433/sluice",
			want: "postgres://sluice:xxxxx@db1:5432,db2:5433/sluice",
		},
		{
			name:   "url in capitals",
			dsn:    "POSTGRES://sluice:s3cret@db/sluice",
			want:   "POSTGRES://sluice:xxxxx@db/sluice",
			secret: "s3cret",
		},
		{
			name:   "key/value with password",
			dsn:    "host=db user=sluice password=s3cret dbname=sluice",
			want:   "host=db user=sluice password=xxxxx dbname=sluice",
			secret: "s3cret",
		},
		{
			name:   "key/value with quoted password",
			dsn:    "host=db user=sluice password='s3 cr\\'et' dbname=sluice sslmode=disable",
			want:   "host=db user=sluice password=xxxxx dbname=sluice sslmode=disable",
			secret: "cr\\'et",
		},
		{
			name:   "key/value with spaces around '='",
			dsn:    "host=db password = s3cret  dbname=sluice",
			want:   "host=db password = xxxxx  dbname=sluice",
			secret: "s3cret",
		},
		{
			name:   "key/value with escaped space in password",
			dsn:    "password=s3\\ cret host=db",
			want:   "password=xxxxx host=db",
			secret: "cret",
		},
		{
			name:   "key/value sslpassword",
			dsn:    "host=db sslpassword=k3ypass sslkey=/etc/key.pem",
			want:   "host=db sslpassword=xxxxx sslkey=/etc/key.pem",
			secret: "k3ypass",
		},
		{
			name:   "key/value unterminated quoted password",
			dsn:    "host=db password='s3cret dbname=sluice",
			want:   "host=db password=xxxxx",
			secret: "s3cret",
		},
		{
			name: "key/value without password",
			dsn:  "host=db user=sluice dbname=sluice sslmode=disable",
			want: "host=db user=sluice dbname=sluice sslmode=disable",
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
